"""Hybrid training step throughput vs minibatch size (32/64/128 chunks; alternating blocks of ~320 chunks
so a shared machine slows all alike), at the thread count given (default 1). Run from a checkout with
/work/demo holding an AN4 workspace with tri1_ali: `.venv/bin/python results/an4/hybrid_speed/batch_size_throughput.py 1`."""
import json, sys
from pathlib import Path
import numpy as np, torch
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.hybrid.benchmarks import _load, _time_steps, flops_per_input_frame
from weakalign.kaldi_steps.hybrid.model import HybridConfig
from weakalign.kaldi_steps.hybrid.train import TrainConfig, ChunkTable, build_model
from weakalign.e2e.benchmarks import matmul_gflops

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
ws = Workspace("an4", data_root=Path("/work/demo/data"), exp_root=Path("/work/demo/exp"))
tm, _, _, targets = _load(ws)
sizes = [32, 64, 128]
frames_per_block = 32 * 10
res = {b: [0.0, 0, 0] for b in sizes}
models = {}
for b in sizes:
    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=b, device="cpu")
    mcfg = HybridConfig(num_pdfs=int(tm.num_pdfs))
    m = build_model(mcfg, None, torch.device("cpu")).train()
    models[b] = (cfg, m, torch.optim.Adam(m.parameters(), lr=1e-3), ChunkTable(targets, cfg))
rng = np.random.default_rng(0)
for rep in range(4):
    for b in sizes:
        cfg, m, opt, table = models[b]
        n = frames_per_block // b
        ids = rng.permutation(len(table.chunks))[: (n + 2) * b]
        batches = [ids[s * b:(s + 1) * b] for s in range(n + 2)]
        def step(i):
            loss, fr, _ = table.loss(m, i, "cpu")
            opt.zero_grad(); (loss / fr).backward(); opt.step()
            return fr, len(i) * int(table.lens[torch.as_tensor(i)].max())
        s, sup, comp = _time_steps(step, batches)
        r = res[b]; r[0] += s; r[1] += sup; r[2] += comp
fpf = flops_per_input_frame(HybridConfig(num_pdfs=int(tm.num_pdfs)))
peak = matmul_gflops()
out = {"threads": torch.get_num_threads(), "matmul_gflops": peak,
       **{str(b): {"sup_frames_per_s": round(r[1] / r[0], 1), "gflops": round(fpf * r[2] / r[0] / 1e9, 1),
                   "ratio_to_matmul": round(fpf * r[2] / r[0] / 1e9 / peak, 3)} for b, r in res.items()}}
print(json.dumps(out, indent=1))
