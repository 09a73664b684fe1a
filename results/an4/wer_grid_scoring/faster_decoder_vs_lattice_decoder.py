# FasterDecoder vs LatticeFasterDecoder on the demo tri1 dev set (session 11): timing and best-path differences.
# Usage: OMP_NUM_THREADS=1 .venv/bin/python THIS /work/demo tri1 dev > faster_decoder_vs_lattice_decoder.txt
import time, sys, numpy as np
import kaldi_hmm_gmm as khg
import kaldifst
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.shard import Shard, shard_args
from weakalign.kaldi_steps.kaldi_io import read_model
from weakalign.kaldi_steps.grid_score import LoglikeDecoder, gmm_pdf_loglikes
from weakalign.kaldi_steps.diag_gmm import GmmParams

root = sys.argv[1]; system = sys.argv[2]; split = sys.argv[3] if len(sys.argv) > 3 else "dev"
ws = Workspace("an4", f"{root}/data", f"{root}/exp")
md = ws.exp / system
tm, am = read_model(md / "final.mdl")
hclg = kaldifst.StdVectorFst.read(str(md / "graph/HCLG.fst"))
a = shard_args(ws, split, 1)[0]
sh = Shard(*a)
params = GmmParams.from_am(am)
lls = [(u, gmm_pdf_loglikes(params, sh.feats[u])) for u in sh.utt_ids]
lat = LoglikeDecoder(hclg, tm)
opts = khg.FasterDecoderOptions(); opts.beam = 13.0; opts.max_active = 7000
fd = khg.FasterDecoder(hclg, opts)
t2p = lat.tid_to_pdf
def fast_best(ll, scale):
    by_tid = (scale * ll[:, t2p[1:]]).astype(np.float32)
    fd.decode(khg.DecodableCtc(by_tid))
    ok, path = fd.get_best_path()
    return ok, path
nfr = sum(len(l) for _, l in lls)
for rep in range(1):  # side by side timing at LM weights 10 and 14
  for w in (10, 14):
    t = time.perf_counter(); A = [lat.best_path(u, l, 1 / w) for u, l in lls]; tl = time.perf_counter() - t
    t = time.perf_counter(); B = [fast_best(l, 1 / w) for u, l in lls]; tf = time.perf_counter() - t
    print(f"w={w} frames={nfr} lattice-faster {tl:.2f}s faster {tf:.2f}s ratio {tl/tf:.2f}", flush=True)
B=[fast_best(lls[0][1], 0.1)]; A=[lat.best_path(lls[0][0], lls[0][1], 0.1)]

def linear(path):
    s = path.start; tids, words, g, ac = [], [], 0.0, 0.0
    while True:
        import _kaldifst; it = _kaldifst._ArcIteratorLattice(path, s)
        arcs = []
        while not it.done: arcs.append(it.value); it.next()
        if not arcs:
            break
        arc = arcs[0]
        if arc.ilabel: tids.append(arc.ilabel)
        if arc.olabel: words.append(arc.olabel)
        g += arc.weight.value1; ac += arc.weight.value2
        s = arc.nextstate
    fw = path.final(s); g += fw.value1; ac += fw.value2
    return tids, words, g, ac
ok, p = B[0]
print(linear(p)[1:], A[0])
same = diff = 0
for w in range(7, 18):
    for (u, l) in lls:
        a = lat.best_path(u, l, 1 / w); okb, pb = fast_best(l, 1 / w); t, ws_, g, ac = linear(pb)
        if a is not None and tuple(ws_) == a.words: same += 1
        else:
            diff += 1
            if a is None or len(a.words) != len(ws_) or any(x != y and {x, y} != {59, 62} for x, y in zip(a.words, ws_)): print("realdiff", w, u, a and a.words, ws_, a and (a.graph, a.acoustic), g, ac)
print("same", same, "diff", diff)
