"""Page faults and time per training step of the default network (16 chunks x 80 frames, 1 thread),
with glibc's default malloc tuning and with mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD) raised."""
import ctypes, resource, sys, time, torch
sys.path.insert(0, "/work/main")
from kaldi_steps.hybrid.model import HybridBLSTM, HybridConfig
if sys.argv[1] == "mallopt":
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    print("mallopt", libc.mallopt(M_MMAP_THRESHOLD, 1 << 30), libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = HybridConfig(num_pdfs=259, cells=int(sys.argv[2]), proj=int(sys.argv[3]))
m = HybridBLSTM(cfg).train()
opt = torch.optim.Adam(m.parameters(), 1e-3)
B, T = 16, 80
feats, lens, tgt = torch.randn(B, T, 80), torch.full((B,), T), torch.randint(0, 259, (B * T,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(feats, lens).reshape(-1, 259), tgt).backward()
    opt.step()
for _ in range(3): step()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(10): step()
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(sys.argv[1:], "ms/step", round(100 * (t1 - t0), 1), "minflt/step", (r1.ru_minflt - r0.ru_minflt) // 10,
      "sys s/step", round((r1.ru_stime - r0.ru_stime) / 10, 4), "user s/step", round((r1.ru_utime - r0.ru_utime) / 10, 4))
