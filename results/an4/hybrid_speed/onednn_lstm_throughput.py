"""Training-step throughput of the hybrid BLSTM with and without its LSTM projection (issue #17).

ATen runs a projected LSTM with its own step loop ("LSTM with projections is not supported with
oneDNN"); without a projection the same ``torch._VF.lstm`` call goes to oneDNN's fused LSTM,
forward and backward. This measures, in one process and in alternating blocks of steps (so machine
load hits every configuration alike), the supervised frames/s of a training step (forward, CE
loss, backward) of ``HybridBLSTM`` on random fbank-shaped batches of the stage's shape: 32 chunks
of 40 frames with 20 + 20 frames of context, 3 BLSTM layers, 300 outputs. Each configuration's
FLOPs per supervised frame (forward x 3 for the backward) and its share of this process's
measured fp32 matmul rate are reported.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/hybrid_speed/onednn_lstm_throughput.py > out.json
"""

import json
import platform
import sys
import time

import torch

from weakalign.kaldi_steps.hybrid.model import HybridBLSTM, HybridConfig

CONFIGS = {            # name: (cells, proj); proj == cells means no projection
    "cells256_proj128 (the stage's)": (256, 128),
    "cells128_noproj (oneDNN)": (128, 128),
    "cells256_noproj (oneDNN)": (256, 256),
}
B, CHUNK, LEFT, RIGHT, FEAT, PDFS, LAYERS = 32, 40, 20, 20, 80, 300, 3
BLOCKS, STEPS_PER_BLOCK = 6, 5


def flops_per_step(cells: int, proj: int) -> float:
    """Forward FLOPs of a step x 3 (backward = 2 x forward): per layer and direction, gates from the
    input and the recurrent state, plus the projection; then the output layer."""
    T = CHUNK + LEFT + RIGHT
    out = proj if proj < cells else cells
    total, inp = 0.0, FEAT
    for _ in range(LAYERS):
        per_dir = 4 * cells * inp + 4 * cells * out + (cells * out if proj < cells else 0)
        total += 2 * 2 * T * B * per_dir
        inp = 2 * out
    total += 2 * T * B * inp * PDFS
    return 3 * total


def matmul_rate(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def main() -> None:
    torch.manual_seed(0)
    T = CHUNK + LEFT + RIGHT
    models = {name: HybridBLSTM(HybridConfig(num_pdfs=PDFS, feat_dim=FEAT, cells=c, proj=p, layers=LAYERS))
              for name, (c, p) in CONFIGS.items()}
    feats = torch.randn(B, T, FEAT)
    lens = torch.full((B,), T)
    targets = torch.randint(0, PDFS, (B, CHUNK))

    def step(model):
        logits = model(feats, lens)[:, LEFT:LEFT + CHUNK]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, PDFS), targets.reshape(-1))
        model.zero_grad(set_to_none=True)
        loss.backward()

    for model in models.values():   # warm-up (oneDNN primitive creation)
        model.train()
        step(model)
    seconds = {name: 0.0 for name in models}
    for _ in range(BLOCKS):
        for name, model in models.items():
            t0 = time.perf_counter()
            for _ in range(STEPS_PER_BLOCK):
                step(model)
            seconds[name] += time.perf_counter() - t0
    rate = matmul_rate()
    steps = BLOCKS * STEPS_PER_BLOCK
    rows = {}
    for name, (c, p) in CONFIGS.items():
        fps = steps * B * CHUNK / seconds[name]
        f = flops_per_step(c, p) / (B * CHUNK)
        rows[name] = {"cells": c, "proj": p if p < c else None,
                      "parameters": sum(x.numel() for x in models[name].parameters()),
                      "supervised_frames_per_s": round(fps, 1), "mflop_per_supervised_frame": round(f / 1e6, 2),
                      "share_of_matmul": round(fps * f / rate, 3)}
    base = rows["cells256_proj128 (the stage's)"]["supervised_frames_per_s"]
    for row in rows.values():
        row["speed_vs_stage"] = round(row["supervised_frames_per_s"] / base, 2)
    json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
               "processor": platform.processor() or platform.platform(), "matmul_gflops": round(rate / 1e9, 1),
               "steps_each": steps, "batch": [B, CHUNK, LEFT, RIGHT], "configs": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
