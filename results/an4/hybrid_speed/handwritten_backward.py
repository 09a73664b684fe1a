"""Issue #17: a projected BLSTM layer with a hand-written backward pass (both directions batched per
step, the recurrent and projection weight gradients as one GEMM over all steps) against ATen's
per-step loop (``HybridBLSTM.forward``): one training step of the stage's default model (3 x 256 cells,
projection 128, 300 pdfs) on random 80-frame windows at 1 thread, best of 3 rounds of 8 steps.
First checks the hand-written gradients (gradcheck in float64, then against nn.LSTM's autograd).
Run from the repository root: .venv/bin/python results/an4/hybrid_speed/handwritten_backward.py
"""
import time

import torch
from torch import nn

from weakalign.kaldi_steps.hybrid.model import HybridBLSTM, HybridConfig

class ProjectedBiLSTMRecurrence(torch.autograd.Function):
    """The recurrence of a projected LSTM for ``D`` directions at once.

    ``gates_x (D, T, B, 4H)``: the input projections plus both biases; ``w_hh (D, 4H, P)``,
    ``w_hr (D, P, H)``. Returns ``r (D, T, B, P)``, each direction run from zero state over its own
    time axis (a reverse direction is given its input already reversed)."""

    @staticmethod
    def forward(ctx, gates_x, w_hh, w_hr):
        D, T, B, G = gates_x.shape
        H, P = G // 4, w_hr.shape[1]
        w_hh_t, w_hr_t = w_hh.transpose(1, 2), w_hr.transpose(1, 2)
        acts = gates_x.new_empty(D, T, B, G)       # i, f, g, o after their nonlinearities
        cells = gates_x.new_empty(D, T + 1, B, H)  # cells[:, t + 1] = c_t; cells[:, 0] = 0
        hidden = gates_x.new_empty(D, T, B, H)
        rs = gates_x.new_empty(D, T + 1, B, P)     # rs[:, t + 1] = r_t; rs[:, 0] = 0
        cells[:, 0].zero_()
        rs[:, 0].zero_()
        for t in range(T):
            a = torch.baddbmm(gates_x[:, t], rs[:, t], w_hh_t)
            torch.sigmoid(a[..., :2 * H], out=acts[:, t, :, :2 * H])
            torch.tanh(a[..., 2 * H:3 * H], out=acts[:, t, :, 2 * H:3 * H])
            torch.sigmoid(a[..., 3 * H:], out=acts[:, t, :, 3 * H:])
            i, f, g, o = acts[:, t].split(H, dim=-1)
            c = torch.addcmul(f * cells[:, t], i, g, out=cells[:, t + 1])
            torch.mul(o, torch.tanh(c), out=hidden[:, t])
            torch.bmm(hidden[:, t], w_hr_t, out=rs[:, t + 1])
        ctx.save_for_backward(w_hh, w_hr, acts, cells, hidden, rs)
        return rs[:, 1:]

    @staticmethod
    def backward(ctx, grad_r):
        w_hh, w_hr, acts, cells, hidden, rs = ctx.saved_tensors
        D, T, B, G = acts.shape
        H, P = G // 4, w_hr.shape[1]
        grad_r = grad_r.contiguous()
        grad_gates = acts.new_empty(D, T, B, G)
        grad_rs = acts.new_empty(D, T, B, P)       # the whole gradient reaching r_t (output + recurrence)
        dr_rec = acts.new_zeros(D, B, P)
        dc_next = acts.new_zeros(D, B, H)
        for t in reversed(range(T)):
            dr = torch.add(grad_r[:, t], dr_rec, out=grad_rs[:, t])
            dh = torch.bmm(dr, w_hr)
            i, f, g, o = acts[:, t].split(H, dim=-1)
            tc = torch.tanh(cells[:, t + 1])
            dc = dc_next + dh * o * (1 - tc * tc)
            di, df, dg, do = grad_gates[:, t].split(H, dim=-1)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * cells[:, t], f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dg)
            torch.mul(dh * tc, o * (1 - o), out=do)
            dc_next = dc * f
            dr_rec = torch.bmm(grad_gates[:, t], w_hh)
        flat_gates = grad_gates.reshape(D, T * B, G)
        grad_w_hh = torch.bmm(flat_gates.transpose(1, 2), rs[:, :T].reshape(D, T * B, P))
        grad_w_hr = torch.bmm(grad_rs.reshape(D, T * B, P).transpose(1, 2), hidden.reshape(D, T * B, H))
        return grad_gates, grad_w_hh, grad_w_hr


def bidirectional_layer(x_fwd: torch.Tensor, x_bwd: torch.Tensor, lstm: nn.LSTM, layer: int) -> torch.Tensor:
    """Layer ``layer`` of the bidirectional projected ``lstm`` over time-major ``x_fwd (T, B, I)`` and
    its reversal ``x_bwd``: ``(2, T, B, P)``, the forward direction's outputs and the reverse
    direction's in reversed time (as ``x_bwd``)."""
    names = [f"l{layer}", f"l{layer}_reverse"]
    w_ih = torch.stack([getattr(lstm, f"weight_ih_{n}") for n in names])             # (2, 4H, I)
    bias = torch.stack([getattr(lstm, f"bias_ih_{n}") + getattr(lstm, f"bias_hh_{n}") for n in names])
    w_hh = torch.stack([getattr(lstm, f"weight_hh_{n}") for n in names])             # (2, 4H, P)
    w_hr = torch.stack([getattr(lstm, f"weight_hr_{n}") for n in names])             # (2, P, H)
    T, B, _ = x_fwd.shape
    x = torch.stack([x_fwd, x_bwd]).reshape(2, T * B, -1)
    gates_x = torch.baddbmm(bias.unsqueeze(1), x, w_ih.transpose(1, 2)).reshape(2, T, B, -1)
    return ProjectedBiLSTMRecurrence.apply(gates_x, w_hh, w_hr)


torch.manual_seed(0)
# gradcheck in double
D,T,B,H,P=2,5,3,4,3
g=torch.randn(D,T,B,4*H,dtype=torch.double,requires_grad=True)
whh=torch.randn(D,4*H,P,dtype=torch.double,requires_grad=True)
whr=torch.randn(D,P,H,dtype=torch.double,requires_grad=True)
print("gradcheck", torch.autograd.gradcheck(ProjectedBiLSTMRecurrence.apply,(g,whh,whr)))
# compare grads with nn.LSTM
lstm=nn.LSTM(80,256,proj_size=128,bidirectional=True,num_layers=1)
x=torch.randn(80,16,80)
out=bidirectional_layer(x,x.flip(0),lstm,0)
y=torch.cat([out[0],out[1].flip(0)],-1)
w=torch.randn_like(y)
(y*w).sum().backward()
g1={n:p.grad.clone() for n,p in lstm.named_parameters()}
lstm.zero_grad()
ref,_=lstm(x); (ref*w).sum().backward()
print("out", (y-ref).abs().max().item())
for n,p in lstm.named_parameters(): print(n, (g1[n]-p.grad).abs().max().item()/p.grad.abs().max().item())

torch.set_num_threads(1)
def new_forward(self, feats, lens):
    x = ((feats - self.feat_mean) / self.feat_std).transpose(0, 1)
    T = x.shape[0]
    ragged = bool((lens != T).any())
    if ragged:
        t = torch.arange(T).unsqueeze(1)
        rev = torch.where(t < lens, lens - 1 - t, t)
    def reverse(y):
        return y.gather(0, rev.unsqueeze(-1).expand_as(y)) if ragged else y.flip(0)
    for layer in range(self.blstm.num_layers):
        if layer > 0 and self.blstm.dropout > 0:
            x = nn.functional.dropout(x, self.blstm.dropout, self.training)
        out = bidirectional_layer(x, reverse(x), self.blstm, layer)
        x = torch.cat([out[0], reverse(out[1])], dim=-1)
    return self.output(self.dropout(x.transpose(0, 1)))
torch.manual_seed(0)
m = HybridBLSTM(HybridConfig(num_pdfs=300))
opt = torch.optim.Adam(m.parameters())
def step(fwd, B):
    x = torch.randn(B, 80, 80); lens = torch.full((B,), 80); lens[0]=60
    y = torch.randint(0, 300, (B, 80))
    logits = fwd(m, x, lens)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 300), y.reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
for B in (16, 32, 64):
    res = {}
    for rnd in range(3):
        for name, fwd in (("old", HybridBLSTM.forward), ("new", new_forward)):
            for _ in range(2): step(fwd, B)
            t0 = time.perf_counter()
            for _ in range(8): step(fwd, B)
            res.setdefault(name, []).append((time.perf_counter() - t0) / 8)
    o, n = min(res["old"]), min(res["new"])
    print(f"B={B} old {o*1000:.0f} ms new {n*1000:.0f} ms  ratio {o/n:.2f}  new sup frames/s {B*40/n:.0f}", flush=True)
