"""Loss terms of the E2E model. Every term is a mean per unit (token or frame), so weights compare.

- :func:`smoothed_ce`: frame-wise CE against ``(1 - m)·one-hot + m·uniform`` over all K classes
  (arXiv 2311.14835's weak alignment supervision, m = 0.5); m = 0 is the one-hot CE.
  It is ``torch.nn.functional.cross_entropy`` with ``label_smoothing=m``, whose smoothing is
  exactly this uniform mixture over all classes; -100 targets (padding) are ignored.
- :func:`soft_target_ce`: the same against ``(1 - m)·q + m·uniform`` for a per-frame target
  distribution ``q`` (the ``aux_targets: soft`` window histograms); for a one-hot ``q`` it is
  :func:`smoothed_ce`.
- :func:`ctc_loss`: CTC over BPE units, per target token.
- :func:`attention_loss`: label-smoothed CE of the teacher-forced decoder, per token, and its accuracy.

>>> logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
>>> loss, acc = smoothed_ce(logits, torch.tensor([[0, -100]]), smoothing=0.0)
>>> round(loss.item(), 4), acc.item()
(0.2395, 1.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE over non-padded frames with the uniformly smoothed target; also the frame accuracy.

    ``logits`` (B, T, K), ``targets`` (B, T) with ``-100`` for padding. Returns zeros
    (with a graph) when every frame is padding.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree in (B, T)")
    valid = targets != IGNORE_INDEX
    if not bool(valid.any()):
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    loss = F.cross_entropy(flat_logits, targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           label_smoothing=float(smoothing), reduction="mean")
    return loss, frame_accuracy(logits, targets)


@torch.no_grad()
def frame_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of non-padded frames whose argmax is the target (NaN if every frame is padding)."""
    valid = targets != IGNORE_INDEX
    return (logits.argmax(-1)[valid] == targets[valid]).float().mean()


def soft_target_ce(logits: torch.Tensor, target_dist: torch.Tensor, valid: torch.Tensor,
                   smoothing: float = 0.0) -> torch.Tensor:
    """Mean over ``valid`` frames of ``-sum_k q_k log_softmax(logits)_k``, ``q = (1-m)·target_dist + m/K``.

    ``logits`` and ``target_dist`` are (B, T, K), each valid row of ``target_dist`` summing
    to 1; ``valid`` (B, T) bool. With one-hot rows this is :func:`smoothed_ce` (and
    ``F.cross_entropy(..., label_smoothing=m)``). Returns zero (with a graph) when no frame is valid.

    >>> logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> onehot = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    >>> round(soft_target_ce(logits, onehot, torch.tensor([[True, False]])).item(), 4)   # as smoothed_ce
    0.2395
    >>> half = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]])
    >>> round(soft_target_ce(logits, half, torch.tensor([[True, False]])).item(), 4)
    1.2395
    """
    if logits.shape != target_dist.shape or valid.shape != logits.shape[:2]:
        raise ValueError(f"logits {tuple(logits.shape)}, target_dist {tuple(target_dist.shape)} and "
                         f"valid {tuple(valid.shape)} disagree")
    if not bool(valid.any()):
        return logits.sum() * 0.0
    log_probs = F.log_softmax(logits[valid].float(), dim=-1)        # (N, K)
    q = target_dist[valid].float()
    m = float(smoothing)
    # Split like F.cross_entropy's label smoothing: (1-m)·CE(q) + m·CE(uniform).
    ce_target = -(q * log_probs).sum(-1)
    ce_uniform = -log_probs.mean(-1)
    return ((1.0 - m) * ce_target + m * ce_uniform).mean()


def ctc_loss(log_probs: torch.Tensor, lens: torch.Tensor, tokens: list[list[int]], blank: int = 0) -> torch.Tensor:
    """CTC (per target token, mean over the batch) of ``log_probs`` (B, T', V) against token lists."""
    targets = torch.tensor([t for seq in tokens for t in seq], dtype=torch.long)
    target_lens = torch.tensor([len(seq) for seq in tokens], dtype=torch.long)
    return F.ctc_loss(log_probs.transpose(0, 1).float(), targets, lens.cpu(), target_lens, blank=blank,
                      reduction="mean", zero_infinity=True)


def decoder_io(tokens: list[list[int]], sos: int, eos: int, device=None):
    """Teacher-forcing input ``[sos] + y`` (padded with eos), target ``y + [eos]`` (padded -100), lengths."""
    lens = torch.tensor([len(t) + 1 for t in tokens], dtype=torch.long)
    L = int(lens.max())
    ys_in = torch.full((len(tokens), L), eos, dtype=torch.long)
    ys_out = torch.full((len(tokens), L), IGNORE_INDEX, dtype=torch.long)
    for i, t in enumerate(tokens):
        ys_in[i, 0] = sos
        ys_in[i, 1:len(t) + 1] = torch.tensor(t, dtype=torch.long)
        ys_out[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        ys_out[i, len(t)] = eos
    return ys_in.to(device), ys_out.to(device), lens.to(device)


def attention_loss(logits: torch.Tensor, ys_out: torch.Tensor, smoothing: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed CE per token of the decoder and its token accuracy (ESPnet's ``acc``)."""
    return smoothed_ce(logits, ys_out, smoothing)
