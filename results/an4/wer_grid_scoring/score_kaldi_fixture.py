"""The project's grid scoring (kaldi_steps/grid_score.py) of real Kaldi's AN4 mono and tri1 models
(shared/fixtures/kaldi_an4_reference), compared cell by cell with Kaldi's own lattice rescoring.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/wer_grid_scoring/score_kaldi_fixture.py OUT.json

HCLG is built by the project (graph.make_graph) from Kaldi's lang and model; features are Kaldi's
(CMVN + deltas). Writes per model: the dev grid (ours vs Kaldi's WER/errors, identical
hypotheses), the point each picks on dev, test WER at it, and timings.
"""
import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first

import json
import sys
import tempfile
import time
from pathlib import Path

import kaldifst
import kaldiio
import numpy as np

from weakalign.kaldi_steps.diag_gmm import GmmParams
from weakalign.kaldi_steps.graph import _word_table, compute_wer, make_graph
from weakalign.kaldi_steps.grid_score import (LoglikeDecoder, ScoringGrid, decode_candidates, decode_point,
                                              gmm_pdf_loglikes, penalised_graph, pick_point, rescore)
from weakalign.kaldi_steps.kaldi_io import read_model
from weakalign.pipeline.acoustic_features import add_deltas, apply_cmvn

F = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "kaldi_an4_reference"


def split_loglikes(split, params):
    d = F / "feats" / split
    utt2spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())
    with kaldiio.ReadHelper(f"ark:{d / 'feats.ark'}") as r:
        raw = dict(r)
    with kaldiio.ReadHelper(f"ark:{d / 'cmvn.ark'}") as r:
        cmvn = dict(r)
    return {u: gmm_pdf_loglikes(params, add_deltas(apply_cmvn(x, cmvn[utt2spk[u]]))) for u, x in sorted(raw.items())}


def kaldi_table(model, split, name):
    path = F / "decode" / model / split / "scoring_kaldi" / name
    return {line.split()[0]: line.split()[1:] for line in path.read_text().splitlines()}


def kaldi_model(model):
    """Kaldi's ``model`` (mono, tri1): transition model, GMMs, the project's HCLG for it, word table, GMM params."""
    tm, am = read_model(F / model / "final.mdl")
    hclg = kaldifst.StdVectorFst.read(str(make_graph(F / "lang", F / model, Path(tempfile.mkdtemp()),
                                                     lm=F / "lang" / "lm.arpa")))
    return tm, am, hclg, _word_table(F / "lang" / "words.txt"), GmmParams.from_am(am)


def main(out):
    grid = ScoringGrid()
    report = {"grid": grid.as_dict()}
    for model in ("mono", "tri1"):
        tm, am, hclg, words, params = kaldi_model(model)
        t0 = time.time()
        dev_ll = split_loglikes("dev", params)
        candidates = decode_candidates(LoglikeDecoder(hclg, tm), dev_ll.items(), grid.lm_weights)
        t_dev = time.time() - t0
        refs = kaldi_table(model, "dev", "test_filt.txt")
        cells, dev = {}, {}
        for (w, p), hyps in rescore(candidates, grid).items():
            ours = {u: [words[i] for i in ids] for u, ids in hyps.items()}
            kaldi = kaldi_table(model, "dev", f"penalty_{p:.1f}/{w}.txt")
            dev[(w, p)] = compute_wer(refs, ours)
            k = compute_wer(refs, kaldi)
            cells[f"{w}_{p}"] = {"ours_wer": dev[(w, p)]["wer"], "ours_errors": dev[(w, p)]["errors"],
                                 "kaldi_wer": k["wer"], "kaldi_errors": k["errors"],
                                 "identical_hyps": sum(ours[u] == kaldi[u] for u in refs), "utts": len(refs)}
        w, p = pick_point(dev)
        t0 = time.time()
        test_ll = split_loglikes("test", params)
        test_hyps = decode_point(LoglikeDecoder(penalised_graph(hclg, p), tm), test_ll.items(), w)
        t_test = time.time() - t0
        test_refs = kaldi_table(model, "test", "test_filt.txt")
        test = compute_wer(test_refs, {u: [words[i] for i in ids] for u, ids in test_hyps.items()})
        report[model] = {"chosen_on_dev": {"lm_weight": w, "penalty": p, "dev_wer": dev[(w, p)]["wer"]},
                         "test": test, "seconds": {"dev_grid": round(t_dev, 1), "test_point": round(t_test, 1)},
                         "paths_per_dev_utt": round(float(np.mean([len(c) for c in candidates.values()])), 2),
                         "dev_cells": cells,
                         "max_cell_error_difference": max(abs(c["ours_errors"] - c["kaldi_errors"])
                                                          for c in cells.values())}
        print(model, report[model]["chosen_on_dev"], "test", test["wer"], test["errors"],
              "max cell diff", report[model]["max_cell_error_difference"], flush=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
