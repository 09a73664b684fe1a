"""The E2E encoder: global CMVN -> SpecAugment -> Conv2d subsampling ×4 -> BLSTM layers with projection.

All BLSTM layers run at 40 ms; output lengths are
:func:`weakalign.align.loader.subsampled_lengths` of the input lengths, the same
function that brings 10 ms alignment labels to this rate.

>>> enc = BLSTMEncoder(idim=80, conv_channels=4, hidden=8, proj=6, num_layers=2)
>>> out = enc(torch.randn(2, 50, 80), torch.tensor([50, 30]))
>>> out.out.shape, out.lens.tolist(), len(out.layers)
(torch.Size([2, 11, 6]), [11, 6], 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..align.loader import load_global_cmvn, subsampled_length, subsampled_lengths


@dataclass
class EncoderOutput:
    out: torch.Tensor          # (B, T', D)
    lens: torch.Tensor         # (B,)
    layers: list               # output of each BLSTM layer; layers[k-1] is layer k


class GlobalCMVN(nn.Module):
    """``(x - mean) / std`` with the train set's statistics stored as buffers (saved with the model)."""

    def __init__(self, dim: int = 80):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def load_stats(self, path: str | Path) -> None:
        """Load ``{"mean": [...], "std": [...]}`` (``data/<c>/fbank/global_cmvn.json``)."""
        mean, std = load_global_cmvn(path)
        if mean.shape != tuple(self.mean.shape):
            raise ValueError(f"{path}: CMVN stats of dim {mean.shape}, model expects {tuple(self.mean.shape)}")
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Conv2dSubsampling(nn.Module):
    """Two Conv2d (kernel 3, stride 2, no padding) + ReLU, then a linear layer: time and frequency /4."""

    def __init__(self, idim: int, channels: int, odim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2), nn.ReLU(),
        )
        self.out = nn.Linear(channels * subsampled_length(idim), odim)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x.unsqueeze(1))                 # (B, C, T', F')
        B, C, T, F = y.shape
        y = self.out(y.transpose(1, 2).reshape(B, T, C * F))
        return y, subsampled_lengths(lens)


def reverse_padded(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x`` (B, T, D) within its length; padded frames stay in place.

    >>> reverse_padded(torch.arange(5.).view(1, 5, 1).repeat(2, 1, 1), torch.tensor([5, 3]))[..., 0].tolist()
    [[4.0, 3.0, 2.0, 1.0, 0.0], [2.0, 1.0, 0.0, 3.0, 4.0]]
    """
    T = x.shape[1]
    t = torch.arange(T, device=x.device)[None, :]
    lens = lens.to(x.device)[:, None]
    index = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


class BLSTMLayer(nn.Module):
    """One bidirectional LSTM layer, linearly projected to ``proj`` dims (as Kaldi's LSTMP).

    A tanh after the projection (ESPnet's BLSTMP) saturated in our AN4 runs (97% of
    outputs at |x| > 0.99 after a few epochs with Adam) and CTC never left all-blank.

    Two unidirectional LSTMs on padded tensors; the backward one reads each sequence
    reversed within its length, so padding never enters a valid frame's state. (Packed
    sequences give the same result, but PyTorch's CPU LSTM backward on packed input
    allocates a full-size zero tensor per time step, which made it ~5x slower.)
    """

    def __init__(self, idim: int, hidden: int, proj: int, norm: bool = False):
        super().__init__()
        self.fwd = nn.LSTM(idim, hidden, batch_first=True)
        self.bwd = nn.LSTM(idim, hidden, batch_first=True)
        self.proj = nn.Linear(2 * hidden, proj)
        self.norm = nn.LayerNorm(proj) if norm else nn.Identity()

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        forward, _ = self.fwd(x)
        backward, _ = self.bwd(reverse_padded(x, lens))
        y = torch.cat([forward, reverse_padded(backward, lens)], dim=-1)
        return self.norm(self.proj(y))


class BLSTMEncoder(nn.Module):
    def __init__(self, idim: int = 80, conv_channels: int = 32, hidden: int = 256, proj: int = 256,
                 num_layers: int = 6, dropout: float = 0.2, residual: bool = False, layer_norm: bool = False):
        super().__init__()
        self.residual = residual
        self.subsampling = Conv2dSubsampling(idim, conv_channels, proj)
        self.layers = nn.ModuleList(BLSTMLayer(proj, hidden, proj, layer_norm) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.output_dim = proj

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> EncoderOutput:
        x, lens = self.subsampling(x, lens)
        if x.shape[1] == 0:
            raise ValueError(f"utterances too short for ×4 subsampling (input lengths {lens.tolist()})")
        outputs = []
        for i, layer in enumerate(self.layers):
            y = layer(self.dropout(x) if i > 0 else x, lens)
            # Residual connections between layers (same width) let the deep stack train like a shallow one.
            x = x + y if self.residual and i > 0 else y
            outputs.append(x)
        return EncoderOutput(out=x, lens=lens, layers=outputs)
