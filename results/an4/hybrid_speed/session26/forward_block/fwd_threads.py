"""The realignment's forward as the stage runs it (blocked_log_probs, 8 utterances per batch) at 1 and 2 threads,
on 96 AN4 dev utterances, alternating; and one utterance per call at 1 thread as before issue #17's batching."""
import time, sys
import kaldi_hmm_gmm  # noqa
import torch
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.hybrid import stage as st
ws = Workspace("an4", "/work/ws/an4_data", "/work/ws/an4_exp")
p = st.load_finished_pass(ws, ws.exp / "hybrid")
feats = st.load_fbank(ws, "dev", "speaker")
sub = {u: feats[u] for u in list(feats)[:96]}
frames = sum(len(x) for x, _, _ in sub.values())
cfg = p.train_config
def blocked(): return list(st.blocked_log_probs(p.model, cfg, sub))
def one(): return [p.model.utterance_log_probs(torch.from_numpy(x), cfg.chunk_width, cfg.left_context, cfg.right_context) for x, _, _ in sub.values()]
for rnd in range(2):
    for name, fn, threads in [("one_per_call", one, 1), ("blocked8", blocked, 1), ("blocked8", blocked, 2)]:
        torch.set_num_threads(threads)
        t = time.perf_counter(); fn(); dt = time.perf_counter() - t
        print(f"{name} threads {threads}: {dt:.2f} s, {frames / dt:.0f} frames/s", flush=True)
