"""How few dev decodes the n-best grid scoring needs (kaldi_steps/grid_score.py): real Kaldi's AN4 mono and
tri1 models (shared/fixtures/kaldi_an4_reference), dev decoded once per LM weight, then for each subset of
the decoded weights: the paths rescored over Kaldi's whole grid, the point picked on dev, test decoded at it,
and how many dev cells are within 2 errors of Kaldi's own lattice rescoring.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/wer_grid_scoring/decoded_lm_weights.py OUT.json
"""
import kaldi_hmm_gmm as khg  # noqa: F401
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kaldifst, numpy as np
from score_kaldi_fixture import F, split_loglikes, kaldi_table
from weakalign.kaldi_steps.diag_gmm import GmmParams
from weakalign.kaldi_steps.graph import _word_table, compute_wer, make_graph
from weakalign.kaldi_steps.grid_score import (LoglikeDecoder, ScoringGrid, decode_point, penalised_graph, pick_point, rescore)
from weakalign.kaldi_steps.kaldi_io import read_model

SUBSETS = [tuple(range(7, 18)), (7, 9, 11, 13, 15, 17), (8, 11, 14, 17), (7, 12, 17), (9, 14), (12,)]
grid = ScoringGrid(); report = {}
for model in ("mono", "tri1"):
    tm, am = read_model(F / model / "final.mdl")
    hclg = kaldifst.StdVectorFst.read(str(make_graph(F / "lang", F / model, Path(tempfile.mkdtemp()), lm=F / "lang" / "lm.arpa")))
    words = _word_table(F / "lang" / "words.txt"); params = GmmParams.from_am(am)
    dev_ll = split_loglikes("dev", params); test_ll = split_loglikes("test", params)
    dec = LoglikeDecoder(hclg, tm)
    per_w, secs = {}, {}
    for w in grid.lm_weights:
        t = time.time(); per_w[w] = {u: dec.best_path(u, ll, 1.0 / w) for u, ll in dev_ll.items()}; secs[w] = time.time() - t
    refs = kaldi_table(model, "dev", "test_filt.txt"); test_refs = kaldi_table(model, "test", "test_filt.txt")
    test_cache = {}
    report[model] = {}
    for sub in SUBSETS:
        cands = {}
        for u in dev_ll:
            found = []
            for w in sub:
                c = per_w[w][u]
                if c is not None and all(c.words != f.words or c.acoustic != f.acoustic for f in found):
                    found.append(c)
            cands[u] = found
        dev, within = {}, 0
        for (w, p), hyps in rescore(cands, grid).items():
            ours = {u: [words[i] for i in ids] for u, ids in hyps.items()}
            dev[(w, p)] = compute_wer(refs, ours)
            k = compute_wer(refs, kaldi_table(model, "dev", f"penalty_{p:.1f}/{w}.txt"))
            within += abs(dev[(w, p)]["errors"] - k["errors"]) <= 2
        w, p = pick_point(dev)
        if (w, p) not in test_cache:
            hy = decode_point(LoglikeDecoder(penalised_graph(hclg, p), tm), test_ll.items(), w)
            test_cache[(w, p)] = compute_wer(test_refs, {u: [words[i] for i in ids] for u, ids in hy.items()})
        t = test_cache[(w, p)]
        r = {"decoded_lm_weights": list(sub), "dev_decode_s": round(sum(secs[x] for x in sub), 1),
             "chosen": [w, p], "dev_wer": dev[(w, p)]["wer"], "test_wer": t["wer"], "test_errors": t["errors"],
             "cells_within_2_errors_of_kaldi": f"{within}/{len(dev)}",
             "paths_per_utt": round(float(np.mean([len(c) for c in cands.values()])), 2)}
        report[model][",".join(map(str, sub))] = r
        print(model, r, flush=True)
Path(sys.argv[1]).write_text(json.dumps(report, indent=1) + "\n")
