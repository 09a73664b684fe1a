"""One decode to lattices per set (kaldi_steps/lattice.py) against the n-best of six decodes, on real
Kaldi's AN4 mono and tri1 models (shared/fixtures/kaldi_an4_reference), cell by cell against Kaldi's own
lattice rescoring, with the times of each side by side in one process (issue #17 item 2).

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/wer_grid_scoring/lattice_scoring_kaldi_fixture.py OUT.json

Per model: the dev grid's WERs of both methods vs Kaldi's, the point each picks on dev, test WER at it
(test decoded once, exactly at the point, as the stages do; and from test's own lattice, as Kaldi does),
and the times: one plain best-path decode of dev at 1/12, the lattice decode + grid rescoring, the six
n-best decodes (alternating order over 2 rounds, the faster of each kept).
"""
import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from score_kaldi_fixture import kaldi_model, kaldi_table, split_loglikes  # noqa: E402

from weakalign.kaldi_steps.graph import compute_wer  # noqa: E402
from weakalign.kaldi_steps.grid_score import (  # noqa: E402
    LoglikeDecoder, ScoringGrid, decode_candidates, decode_point, penalised_graph, pick_point,
    rescore)
from weakalign.kaldi_steps.lattice import LatticeDecoder, lattice_candidates  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def grid_wers(candidates, grid, refs, words, model, split):
    out, cells = {}, {}
    for (w, p), hyps in rescore(candidates, grid).items():
        ours = {u: [words[i] for i in ids] for u, ids in hyps.items()}
        out[(w, p)] = compute_wer(refs, ours)
        if split == "dev":
            k = compute_wer(refs, kaldi_table(model, "dev", f"penalty_{p:.1f}/{w}.txt"))
            cells[f"{w}_{p}"] = {"ours_errors": out[(w, p)]["errors"], "kaldi_errors": k["errors"]}
    return out, cells


def main(out):
    grid = ScoringGrid()
    report = {"grid": grid.as_dict(), "machine": {"cpu": platform.processor() or platform.machine(),
                                                  "python": platform.python_version()},
              "lattice": {"beam": 13.0, "lattice_beam": 6.0, "acoustic_scale": "1/12"}}
    for model in ("mono", "tri1"):
        tm, am, hclg, words, params = kaldi_model(model)
        ll = {s: split_loglikes(s, params) for s in ("dev", "test")}
        refs = {s: kaldi_table(model, s, "test_filt.txt") for s in ("dev", "test")}
        plain, lat_dec = LoglikeDecoder(hclg, tm), LatticeDecoder(hclg, tm)
        times = {"plain_decode": [], "lattice": [], "nbest6": []}
        for _ in range(2):
            _, t = timed(lambda: decode_point(plain, ll["dev"].items(), 12))
            times["plain_decode"].append(t)
            lat_c, t = timed(lambda: lattice_candidates(lat_dec, ll["dev"].items(), grid))
            times["lattice"].append(t)
            nb_c, t = timed(lambda: decode_candidates(plain, ll["dev"].items(), grid.decode_lm_weights))
            times["nbest6"].append(t)
        best = {k: min(v) for k, v in times.items()}
        r = {"dev_seconds_best_of_2": {k: round(v, 2) for k, v in best.items()},
             "lattice_over_plain_decode": round(best["lattice"] / best["plain_decode"], 2),
             "nbest6_over_plain_decode": round(best["nbest6"] / best["plain_decode"], 2)}
        for name, cands in (("lattice", lat_c), ("nbest6", nb_c)):
            dev, cells = grid_wers(cands, grid, refs["dev"], words, model, "dev")
            w, p = pick_point(dev)
            test_hyps = decode_point(LoglikeDecoder(penalised_graph(hclg, p), tm), ll["test"].items(), w)
            test = compute_wer(refs["test"], {u: [words[i] for i in ids] for u, ids in test_hyps.items()})
            diffs = [c["ours_errors"] - c["kaldi_errors"] for c in cells.values()]
            r[name] = {"point": [w, p], "dev_wer": dev[(w, p)]["wer"], "test_wer": test["wer"],
                       "test_errors": test["errors"],
                       "dev_cells_within_2_errors_of_kaldi": sum(abs(d) <= 2 for d in diffs),
                       "max_cell_error_difference": max(map(abs, diffs)), "dev_cells": cells,
                       "paths_per_dev_utt": round(float(np.mean([len(c) for c in cands.values()])), 2)}
            if name == "lattice":
                test_lat = lattice_candidates(lat_dec, ll["test"].items(), grid)
                tl, _ = grid_wers(test_lat, grid, refs["test"], words, model, "test")
                r[name]["test_from_its_lattice"] = {"wer": tl[(w, p)]["wer"], "errors": tl[(w, p)]["errors"]}
        kaldi_dev = {pt: compute_wer(refs["dev"], kaldi_table(model, "dev", f"penalty_{pt[1]:.1f}/{pt[0]}.txt"))
                     for pt in grid.points}
        kw, kp = pick_point(kaldi_dev)
        kt = compute_wer(refs["test"], kaldi_table(model, "test", f"penalty_{kp:.1f}/{kw}.txt"))
        r["kaldi"] = {"point": [kw, kp], "dev_wer": kaldi_dev[(kw, kp)]["wer"], "test_wer": kt["wer"],
                      "test_errors": kt["errors"]}
        report[model] = r
        print(model, json.dumps({k: v for k, v in r.items() if k not in ("lattice", "nbest6")}),
              {n: {k: v for k, v in r[n].items() if k != "dev_cells"} for n in ("lattice", "nbest6")}, flush=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
