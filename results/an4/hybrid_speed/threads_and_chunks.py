"""Supervised frames/s of the new trainer at 1 vs 2 threads and for chunk widths 40 and 80 (20/20
context), and of the old trainer (Python chunks, packed nn.LSTM) at 1 thread -- today's stage default
without OMP_NUM_THREADS -- in alternating 5-step blocks (the first of each not timed) in one process on AN4's real chunks (issue #17).

    .venv/bin/python results/an4/hybrid_speed/threads_and_chunks.py > results/an4/hybrid_speed/threads_and_chunks.json
"""
import json
import time

import numpy as np
import torch

from weakalign.e2e.benchmarks import matmul_gflops
from weakalign.kaldi_steps.hybrid.benchmarks import _load, flops_per_input_frame
from weakalign.kaldi_steps.hybrid.model import HybridConfig
from weakalign.kaldi_steps.hybrid.train import ChunkTable, TrainConfig, _batch_loss, build_model
from weakalign.pipeline.workspace import Workspace

ws = Workspace("an4", data_root="data", exp_root="exp")
trans_model, _, _, targets = _load(ws)
mcfg = HybridConfig(num_pdfs=int(trans_model.num_pdfs))
torch.manual_seed(0)
model = build_model(mcfg, None, torch.device("cpu")).train()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
fpf = flops_per_input_frame(mcfg)
tables = {w: ChunkTable(targets, TrainConfig(chunk_width=w, left_context=20, right_context=20)) for w in (40, 80)}
rng = np.random.default_rng(0)
orders = {w: rng.permutation(len(t)) for w, t in tables.items()}
runs = {"old_w40_1thread": ("old", 40, 1), "new_w40_1thread": ("new", 40, 1), "new_w40_2threads": ("new", 40, 2),
        "new_w80_2threads": ("new", 80, 2)}
acc = {k: [0.0, 0, 0] for k in runs}
pos = {k: 0 for k in runs}
for block in range(3):
    for name, (path, width, threads) in runs.items():
        torch.set_num_threads(threads)
        table, order = tables[width], orders[width]
        for s in range(5):
            ids = order[pos[name] * 32:(pos[name] + 1) * 32]
            pos[name] += 1
            t = time.perf_counter()
            if path == "old":
                loss, frames, _ = _batch_loss(model, targets, [table.chunks[i] for i in ids], "cpu", packed=True)
            else:
                loss, frames, _ = table.loss(model, ids, "cpu")
            opt.zero_grad()
            (loss / frames).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if s == 0:
                continue        # each block's first step re-warms after the thread switch
            acc[name][0] += time.perf_counter() - t
            acc[name][1] += frames
            lens = table.lens[torch.as_tensor(ids)]
            acc[name][2] += int(lens.sum()) if path == "old" else len(ids) * int(lens.max())
peaks = {}
for th in (1, 2):
    torch.set_num_threads(th)
    peaks[th] = matmul_gflops()
out = {"matmul_gflops": {str(k): round(v, 1) for k, v in peaks.items()}, "flops_per_input_frame": fpf}
for name, (secs, sup, comp) in acc.items():
    gflops = fpf * comp / secs / 1e9
    out[name] = {"supervised_frames_per_s": round(sup / secs, 1), "flops_per_supervised_frame": round(fpf * comp / sup),
                 "achieved_gflops": round(gflops, 2), "share_of_matmul_peak": round(gflops / peaks[runs[name][2]], 3)}
base = out["old_w40_1thread"]["supervised_frames_per_s"]
out["speedup_vs_old_1thread"] = {k: round(out[k]["supervised_frames_per_s"] / base, 2) for k in runs}
print(json.dumps(out, indent=1))
