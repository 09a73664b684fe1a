"""LatticeSimpleDecoder (no max-active) against one plain best-path decode (LatticeFasterDecoder, max-active
7000) on speechocean762's mono, over dev utterances FIRST..LAST of the one-job shard, one process, 1 thread:
decode time, reading the lattices, the grid pass, and the lattices' size.

    OMP_NUM_THREADS=1 .venv/bin/python lattice_decoder_probe.py EXP_ROOT DATA_ROOT FIRST LAST
"""
import kaldi_hmm_gmm as khg  # noqa
import time, sys
import kaldifst, kaldi_decoder
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.shard import Shard, shard_args
from weakalign.kaldi_steps.kaldi_io import read_model
from weakalign.kaldi_steps.grid_score import LoglikeDecoder, ScoringGrid, scaled_by_transition
from weakalign.kaldi_steps.lattice import LatticeDecoder, RawLattice, grid_best_paths
ws = Workspace("speechocean762", data_root=sys.argv[2], exp_root=sys.argv[1])
tm, am = read_model(ws.exp / "mono" / "final.mdl")
hclg = kaldifst.StdVectorFst.read(str(ws.exp / "mono" / "graph" / "HCLG.fst"))
shard = Shard(*shard_args(ws, "dev", 1)[0])
ll = list(shard._pdf_loglikes(am))[int(sys.argv[3]):int(sys.argv[4])]
plain, lat = LoglikeDecoder(hclg, tm), LatticeDecoder(hclg, tm)
t = dict(plain=0, decode=0, read=0, grid=0)
lats = []
t0 = time.perf_counter(); [plain.best_path(u, x, 1/12) for u, x in ll]; t["plain"] = time.perf_counter() - t0
for u, x in ll:
    a = time.perf_counter(); lat.decoder.decode(kaldi_decoder.DecodableCtc(scaled_by_transition(x, lat.tid_to_pdf, 1/12)))
    _, L = lat.decoder.get_raw_lattice(True); b = time.perf_counter()
    lats.append(RawLattice.from_kaldifst(L, 1/12)); c = time.perf_counter()
    t["decode"] += b - a; t["read"] += c - b
a = time.perf_counter(); grid_best_paths(lats, ScoringGrid().points); t["grid"] = time.perf_counter() - a
print({k: round(v, 2) for k, v in t.items()}, "frames", sum(len(x) for _, x in ll), "arcs/utt", sum(l.num_arcs for l in lats) // len(lats), "states/utt", sum(l.num_states for l in lats) // len(lats))
