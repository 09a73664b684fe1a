"""One training step of the hybrid BLSTM (16 chunks of 80 frames, 1 thread): eager vs torch.compile."""
import sys, time, torch
sys.path.insert(0, "/work/main")
from kaldi_steps.hybrid.model import HybridBLSTM, HybridConfig
torch.set_num_threads(1)
torch.manual_seed(0)
B, T = int(sys.argv[1]) if len(sys.argv) > 1 else 16, 80
variants = sys.argv[2].split(",") if len(sys.argv) > 2 else ["eager", "compiled"]
CELLS, PROJ = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (256, 128)
cfg = HybridConfig(num_pdfs=259, feat_dim=80, cells=CELLS, proj=PROJ, layers=3, dropout=0.1)
feats = torch.randn(B, T, 80)
lens = torch.full((B,), T, dtype=torch.long)
tgt = torch.randint(0, 259, (B, T))

def make(variant):
    m = HybridBLSTM(cfg)
    m.train()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    fwd = m
    if variant == "compiled":
        torch._dynamo.config.allow_rnn = True
        fwd = torch.compile(m, dynamic=False)
    def step():
        opt.zero_grad()
        logits = fwd(feats, lens)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 259), tgt.reshape(-1))
        loss.backward()
        opt.step()
        return loss
    return step

for v in variants:
    step = make(v)
    t0 = time.time(); step(); step(); print(v, "warmup", round(time.time() - t0, 1), "s", flush=True)
    ts = []
    for _ in range(8):
        t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
    ts.sort()
    print(CELLS, PROJ, sum(p.numel() for p in HybridBLSTM(cfg).parameters()), v, "ms/step median", round(1000 * ts[len(ts) // 2], 1), "min", round(1000 * ts[0], 1), flush=True)
