"""Mono dev at (13, 0.0): the lattice best path vs the plain decode at 1/13, per utterance (RESULTS.md, session 23).

    .venv/bin/python results/an4/wer_grid_scoring/lattice_ties_mono_dev.py > lattice_ties_mono_dev.txt
"""
import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first
import sys  # noqa: E402
sys.path.insert(0, "results/an4/wer_grid_scoring")
from score_kaldi_fixture import kaldi_model, split_loglikes
from weakalign.kaldi_steps.grid_score import LoglikeDecoder, ScoringGrid
from weakalign.kaldi_steps.lattice import LatticeDecoder, lattice_candidates
tm, am, hclg, words, params = kaldi_model("mono")
dev = split_loglikes("dev", params)
grid = ScoringGrid((13,), (0.0,))
lat = lattice_candidates(LatticeDecoder(hclg, tm), dev.items(), grid)
plain = LoglikeDecoder(hclg, tm)
worse = better = same = 0
for u, ll in dev.items():
    c = plain.best_path(u, ll, 1/13)
    l = min(lat[u], key=lambda x: x.cost(13, 0))
    if l.words == c.words: same += 1
    elif l.cost(13, 0) < c.cost(13, 0) - 1e-3: better += 1
    else:
        worse += 1
        if worse < 4: print(u, "lat", l.cost(13,0), l.words, "plain", c.cost(13,0), c.words)
print("same", same, "lattice cheaper", better, "lattice dearer", worse)
