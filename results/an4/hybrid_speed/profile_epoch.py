"""Where one hybrid training step's time goes, old trainer vs new, on AN4's real chunks (issue #17).

Run from the repo root after `make align STOP_AFTER=tri1`:
    .venv/bin/python results/an4/hybrid_speed/profile_epoch.py [threads] > results/an4/hybrid_speed/profile.json
Times batch assembly, forward, backward, clip + Adam step per minibatch (stage defaults: 32 chunks of
40 frames + 20/20 context), alternating blocks of the two trainers so machine load hits both alike,
and the held-out evaluation of one epoch; an epoch's share of each phase is scaled from the steps.
"""
import json
import sys
import time

import numpy as np
import torch

from weakalign.kaldi_steps.hybrid.benchmarks import _load, flops_per_input_frame
from weakalign.kaldi_steps.hybrid.model import HybridConfig
from weakalign.kaldi_steps.hybrid.train import (IGNORE, ChunkTable, TrainConfig, _chunks, build_model, evaluate,
                                                heldout_split)
from weakalign.pipeline.workspace import Workspace

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(threads)
ws = Workspace("an4", data_root="data", exp_root="exp")
trans_model, _, feats, targets = _load(ws)
cfg = TrainConfig(chunk_width=40, left_context=20, right_context=20, batch_size=32)
mcfg = HybridConfig(num_pdfs=int(trans_model.num_pdfs))
torch.manual_seed(0)
model = build_model(mcfg, None, torch.device("cpu")).train()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
utt2spk = {u: feats[u][1] for u in targets}
train_ids, held_ids = heldout_split(utt2spk, 0.05, 0)
train = {u: targets[u] for u in train_ids}
held = {u: targets[u] for u in held_ids}
t = time.perf_counter()
table = ChunkTable(train, cfg)
table_s = time.perf_counter() - t
chunks = table.chunks
order = np.random.default_rng(0).permutation(len(chunks))
phases = {name: {"assemble": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "steps": 0, "sup": 0}
          for name in ("old", "new")}


def assemble_old(ids):
    fs, ts, lens = [], [], []
    for i in ids:
        utt, w0, w1, c0, c1 = chunks[i]
        x, y = train[utt]
        fs.append(torch.from_numpy(x[w0:w1]))
        tt = np.full(w1 - w0, IGNORE, dtype=np.int64)
        tt[c0 - w0:c1 - w0] = y[c0:c1]
        ts.append(torch.from_numpy(tt))
        lens.append(w1 - w0)
    return (torch.nn.utils.rnn.pad_sequence(fs, batch_first=True),
            torch.nn.utils.rnn.pad_sequence(ts, batch_first=True, padding_value=IGNORE), torch.tensor(lens))


def step(name, ids):
    p = phases[name]
    t0 = time.perf_counter()
    x, y, lens = assemble_old(ids) if name == "old" else table.batch(ids)
    t1 = time.perf_counter()
    logits = (model.forward_packed if name == "old" else model)(x, lens)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    frames = int((y != IGNORE).sum())
    t2 = time.perf_counter()
    opt.zero_grad()
    (loss / frames).backward()
    t3 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    t4 = time.perf_counter()
    for k, v in (("assemble", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
        p[k] += v
    p["steps"] += 1
    p["sup"] += frames


STEPS, BLOCK = 24, 6
for b in range(0, STEPS, BLOCK):
    for name in ("old", "new"):
        for s in range(b, b + BLOCK):
            step(name, order[s * 32:(s + 1) * 32])
t = time.perf_counter()
evaluate(model, held, cfg)
eval_s = time.perf_counter() - t
steps_per_epoch = -(-len(chunks) // 32)
out = {"threads": threads, "train_utterances": len(train), "chunks": len(chunks), "steps_per_epoch": steps_per_epoch,
       "chunk_table_build_s": round(table_s, 2), "heldout_utterances": len(held), "heldout_eval_s": round(eval_s, 2),
       "flops_per_input_frame": flops_per_input_frame(mcfg), "note": "AN4 train without speed-perturbed copies "
       "(the stage's epoch is 3x these chunks); per-step means over %d steps each, alternating blocks" % STEPS}
for name, p in phases.items():
    total = sum(p[k] for k in ("assemble", "forward", "backward", "optimizer"))
    out[name] = {**{f"{k}_ms_per_step": round(1000 * p[k] / p["steps"], 1)
                    for k in ("assemble", "forward", "backward", "optimizer")},
                 **{f"{k}_share": round(p[k] / total, 3) for k in ("assemble", "forward", "backward", "optimizer")},
                 "supervised_frames_per_s": round(p["sup"] / total, 1),
                 "epoch_s_estimate": round(total / p["steps"] * steps_per_epoch, 1)}
out["speedup"] = round(out["new"]["supervised_frames_per_s"] / out["old"]["supervised_frames_per_s"], 2)
print(json.dumps(out, indent=1))
