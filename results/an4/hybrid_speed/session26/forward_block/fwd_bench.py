"""Realignment's forward: one utterance's windows per call (now) vs every window of a block of utterances in one batch."""
import time, sys
import kaldi_hmm_gmm  # noqa
import numpy as np, torch
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.hybrid import stage as st
from weakalign.kaldi_steps.hybrid.model import chunk_windows, windows_to_batch
torch.set_num_threads(1)
ws = Workspace("an4", "/work/ws/an4_data", "/work/ws/an4_exp")
p = st.load_finished_pass(ws, ws.exp / "hybrid")
feats = st.load_fbank(ws, "dev", "speaker")
utts = list(feats)[:96]
L = R = int(sys.argv[1]) if len(sys.argv) > 1 else 20
def per_utt():
    return [p.model.utterance_log_probs(torch.from_numpy(feats[u][0]), 40, L, R) for u in utts]
@torch.no_grad()
def blocked(block, sort=False):
    out = []
    for b in range(0, len(utts), block):
        us = utts[b:b + block]
        wins, owners = [], []
        for u in us:
            for w in chunk_windows(len(feats[u][0]), 40, L, R):
                wins.append(w); owners.append(u)
        xs = [torch.from_numpy(feats[u][0][w0:w1]) for u, (w0, w1, _, _) in zip(owners, wins)]
        lens = torch.tensor([len(x) for x in xs])
        batch = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
        lp = torch.log_softmax(p.model(batch, lens), -1)
        per = {}
        for i, (u, (w0, _, c0, c1)) in enumerate(zip(owners, wins)):
            per.setdefault(u, []).append(lp[i, c0 - w0:c1 - w0])
        out += [torch.cat(per[u]) for u in us]
    return out
runs = [("per_utt", per_utt)] + [(f"block{b}", lambda b=b: blocked(b)) for b in (4, 8, 16, 32)]
for name, fn in runs + runs:
    t = time.perf_counter(); r = fn(); dt = time.perf_counter() - t
    ref = per_utt() if name != "per_utt" else r
    diff = max(float((a - b).abs().max()) for a, b in zip(r, ref))
    same = np.mean([float((a.argmax(-1) == b.argmax(-1)).float().mean()) for a, b in zip(r, ref)])
    print(f"{name}: {dt:.2f} s for {sum(len(feats[u][0]) for u in utts)} frames; max |diff| {diff:.2e}, argmax same {same:.5f}", flush=True)
