"""Issue #17: one training step of the stage's default BLSTM (300 pdfs) at 1 thread for (chunks per rank, chunk width,
context each side) on random windows: supervised frames/s and the ratio to the stage's (16 chunks per rank of 2, 40, 20).
Best of 3 rounds of 6 steps. Run from the repository root: .venv/bin/python results/an4/hybrid_speed/session25/step_grid.py
"""
import time

import torch
from torch import nn
from weakalign.kaldi_steps.hybrid.model import HybridBLSTM, HybridConfig
torch.set_num_threads(1)
torch.manual_seed(0)
m = HybridBLSTM(HybridConfig(num_pdfs=300)); opt = torch.optim.Adam(m.parameters())
def step(B, chunk, ctx):
    T = chunk + 2 * ctx
    x = torch.randn(B, T, 80); lens = torch.full((B,), T)
    y = torch.randint(0, 300, (B, T)); y[:, :ctx] = -100; y[:, ctx + chunk:] = -100
    logits = m(x, lens)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 300), y.reshape(-1), ignore_index=-100)
    opt.zero_grad(); loss.backward(); opt.step()
cfgs = [(16, 40, 20), (8, 80, 20), (16, 80, 20), (16, 60, 20), (16, 40, 10), (32, 40, 20), (11, 60, 20)]
res = {}
for rnd in range(3):
    for c in cfgs:
        for _ in range(2): step(*c)
        t0 = time.perf_counter()
        for _ in range(6): step(*c)
        res.setdefault(c, []).append((time.perf_counter() - t0) / 6)
base = 16 * 40 / min(res[cfgs[0]])
for c in cfgs:
    s = min(res[c]); fps = c[0] * c[1] / s
    print(c, f"{s*1000:.0f} ms/step, {fps:.0f} sup frames/s, x{fps/base:.2f}")
