"""CTC prefix scores for joint CTC/attention decoding (Watanabe et al. 2017, Algorithm 2).

For a prefix ``g`` the scorer keeps, for every encoder frame ``t``, the log
probabilities ``r_t^n(g)`` / ``r_t^b(g)`` that the first ``t+1`` frames emit exactly
``g`` ending in a non-blank / blank frame. Extending ``g`` by ``c`` gives the
*prefix* probability ``psi(g+c) = P(g+c is a prefix of the output | x)``;
extending by ``<eos>`` gives the full sequence probability ``P(g | x)``, the
quantity ``torch.nn.functional.ctc_loss`` computes (the tests check that).

Everything is vectorised over (hypotheses x candidate tokens); only the time
recursion is a Python loop. One utterance at a time, which is how beam search
uses it.

>>> import torch
>>> lp = torch.randn(6, 5).log_softmax(-1)
>>> scorer = CTCPrefixScorer(lp, blank=0, eos=4)
>>> state = scorer.initial_state()
>>> for tok in [2, 3]:
...     psi, r = scorer.extend(state, torch.tensor([[tok]]))
...     state = scorer.select(state, r, psi, torch.tensor([0]), torch.tensor([0]), torch.tensor([tok]))
>>> full, _ = scorer.extend(state, torch.tensor([[4]]))
>>> loss = torch.nn.functional.ctc_loss(lp[:, None], torch.tensor([[2, 3]]), torch.tensor([6]),
...                                     torch.tensor([2]), reduction="sum")
>>> bool(torch.isclose(full[0, 0], -loss, atol=1e-4))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class CTCState:
    """CTC state of N hypotheses of equal length ``length`` (tokens after ``<sos>``)."""

    r: torch.Tensor          # (N, T, 2): log r^n, log r^b per frame
    psi: torch.Tensor        # (N,): log prefix probability of each hypothesis
    last: torch.Tensor       # (N,): last token, -1 for the bare <sos>
    length: int


class CTCPrefixScorer:
    """Prefix scores over one utterance's CTC log-posteriors ``log_probs`` (T, V)."""

    def __init__(self, log_probs: torch.Tensor, blank: int, eos: int):
        self.x = log_probs
        self.T, self.V = log_probs.shape
        self.blank, self.eos = blank, eos

    def initial_state(self) -> CTCState:
        r = torch.full((1, self.T, 2), NEG_INF, dtype=self.x.dtype, device=self.x.device)
        r[0, :, 1] = torch.cumsum(self.x[:, self.blank], dim=0)
        return CTCState(r=r, psi=torch.zeros(1, dtype=self.x.dtype, device=self.x.device),
                        last=torch.full((1,), -1, dtype=torch.long, device=self.x.device), length=0)

    def extend(self, state: CTCState, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix scores of each hypothesis extended by each of its candidates ``cand`` (N, C).

        Returns ``psi`` (N, C) and the new forward variables ``r`` (T, N, C, 2).
        """
        T = self.T
        N, C = cand.shape
        xs = self.x[:, cand]                                           # (T, N, C)
        x_blank = self.x[:, self.blank][:, None, None]                 # (T, 1, 1)
        r_prev = state.r.transpose(0, 1)                               # (T, N, 2)
        r_sum = torch.logaddexp(r_prev[..., 0], r_prev[..., 1])        # (T, N)
        # A repeated label needs a blank in between: only the blank-ending paths of g continue.
        same = (cand == state.last[:, None])[None]                     # (1, N, C)
        phi = torch.where(same, r_prev[..., 1][..., None], r_sum[..., None])  # (T, N, C)

        r_n = torch.full((T, N, C), NEG_INF, dtype=self.x.dtype, device=self.x.device)
        r_b = torch.full_like(r_n, NEG_INF)
        if state.length == 0:
            r_n[0] = xs[0]
        # A prefix of L tokens cannot be complete before frame L-1.
        start = max(state.length, 1)
        # The loop runs per frame and its cost is its op count: frames are views taken once
        # (unbind), written in place.
        rn, rb, phi_t, xs_t, xb_t = r_n.unbind(0), r_b.unbind(0), phi.unbind(0), xs.unbind(0), x_blank.unbind(0)
        for t in range(start, T):
            torch.logaddexp(rn[t - 1], phi_t[t - 1], out=rn[t]).add_(xs_t[t])
            torch.logaddexp(rn[t - 1], rb[t - 1], out=rb[t]).add_(xb_t[t])
        psi = self._prefix_log_prob(r_n, phi, xs, start)
        r = torch.stack([r_n, r_b], dim=-1)
        # <eos>: the prefix is the whole output, P(g | x) = r^n_T + r^b_T.
        is_eos = cand == self.eos
        psi = torch.where(is_eos, r_sum[T - 1][:, None].expand(N, C), psi)
        psi = torch.where(cand == self.blank, torch.full_like(psi, NEG_INF), psi)
        return psi, r

    def _prefix_log_prob(self, r_n: torch.Tensor, phi: torch.Tensor, xs: torch.Tensor, start: int) -> torch.Tensor:
        """``psi`` (N, C): the prefix is complete at frame ``start-1`` or its last token starts at a later
        frame ``t`` (``phi[t-1] + xs[t]``); one logsumexp over frames instead of a running sum."""
        T, N, C = r_n.shape
        if start > T:
            return torch.full((N, C), NEG_INF, dtype=self.x.dtype, device=self.x.device)
        return torch.logsumexp(torch.cat([r_n[start - 1][None], phi[start - 1:T - 1] + xs[start:T]]), dim=0)

    def select(self, state: CTCState, r: torch.Tensor, psi: torch.Tensor, hyp_idx: torch.Tensor,
               cand_idx: torch.Tensor, tokens: torch.Tensor) -> CTCState:
        """The state of the chosen extensions: hypothesis ``hyp_idx[k]`` + its candidate ``cand_idx[k]``."""
        return CTCState(r=r[:, hyp_idx, cand_idx].transpose(0, 1).contiguous(), psi=psi[hyp_idx, cand_idx],
                        last=tokens, length=state.length + 1)

    def sequence_log_prob(self, tokens: list[int]) -> float:
        """``log P(tokens | x)`` by extending token by token, then by ``<eos>``."""
        state = self.initial_state()
        zero = torch.zeros(1, dtype=torch.long, device=self.x.device)
        for tok in tokens:
            cand = torch.tensor([[tok]], device=self.x.device)
            psi, r = self.extend(state, cand)
            state = self.select(state, r, psi, zero, zero, cand[0])
        psi, _ = self.extend(state, torch.tensor([[self.eos]], device=self.x.device))
        return float(psi[0, 0])
