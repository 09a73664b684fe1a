"""Where the lattice check's time goes, on Kaldi's AN4 tri1 fixture dev (103 utterances), one process, 1 thread,
2 rounds: one plain best-path decode at 1/12 (LoglikeDecoder, max-active 7000) beside the lattice check's parts:
the scaled decodable matrix, LatticeSimpleDecoder.decode, get_raw_lattice, reading it (temp file + parse),
the grid pass over all 33 points.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/wer_grid_scoring/lattice_check_profile.py
"""
import kaldi_hmm_gmm as khg  # noqa
import sys, time
from pathlib import Path
sys.path.insert(0, "results/an4/wer_grid_scoring")
from score_kaldi_fixture import kaldi_model, split_loglikes
import kaldi_decoder
from weakalign.kaldi_steps.grid_score import LoglikeDecoder, ScoringGrid, scaled_by_transition
from weakalign.kaldi_steps.lattice import LatticeDecoder, RawLattice, grid_best_paths
tm, am, hclg, words, params = kaldi_model("tri1")
ll = split_loglikes("dev", params)
plain, lat = LoglikeDecoder(hclg, tm), LatticeDecoder(hclg, tm)
for rnd in range(2):
    t = {k: 0.0 for k in ("plain", "scale", "decode", "getlat", "read", "grid")}
    t0 = time.perf_counter()
    for u, x in ll.items(): plain.best_path(u, x, 1/12)
    t["plain"] = time.perf_counter() - t0
    lats = []
    for u, x in ll.items():
        a = time.perf_counter(); d = kaldi_decoder.DecodableCtc(scaled_by_transition(x, lat.tid_to_pdf, 1/12)); b = time.perf_counter()
        lat.decoder.decode(d); c = time.perf_counter()
        _, L = lat.decoder.get_raw_lattice(True); e = time.perf_counter()
        lats.append(RawLattice.from_kaldifst(L, 1/12)); f = time.perf_counter()
        t["scale"] += b - a; t["decode"] += c - b; t["getlat"] += e - c; t["read"] += f - e
    a = time.perf_counter(); grid_best_paths(lats, ScoringGrid().points); t["grid"] = time.perf_counter() - a
    print({k: round(v, 3) for k, v in t.items()}, "arcs", sum(lat.num_arcs for lat in lats), flush=True)
