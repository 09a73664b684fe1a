"""SpecAugment (Park et al. 2019): frequency and time masks, optional time warp.

Masks replace values with zero, which after global CMVN is the mean. Time warp
moves frames in time, so it must stay off when a frame-level alignment loss is
used (the labels would no longer line up): :class:`SpecAugment` refuses
``time_warp > 0`` together with ``keep_frames_aligned=True``.

>>> aug = SpecAugment(num_freq_masks=2, freq_mask_width=27, num_time_masks=2, time_mask_width=40)
>>> x = torch.randn(2, 100, 80)
>>> y = aug(x, torch.tensor([100, 60]))
>>> y.shape
torch.Size([2, 100, 80])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpecAugment(nn.Module):
    def __init__(self, num_freq_masks: int = 2, freq_mask_width: int = 27, num_time_masks: int = 2,
                 time_mask_width: int = 40, time_mask_max_ratio: float = 0.2, time_warp: int = 0,
                 keep_frames_aligned: bool = False):
        super().__init__()
        if time_warp > 0 and keep_frames_aligned:
            raise ValueError("time warp would move frames against their alignment labels; "
                             "set time_warp: 0 when an alignment loss is on")
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.num_time_masks = num_time_masks
        self.time_mask_width = time_mask_width
        self.time_mask_max_ratio = time_mask_max_ratio
        self.time_warp = time_warp

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, F) -> augmented copy; masks stay within each utterance's length."""
        if self.time_warp > 0:
            x = self._warp(x, lens)
        B, T, D = x.shape
        keep = torch.ones(B, T, D, dtype=torch.bool, device=x.device)
        freq = torch.arange(D, device=x.device)
        time = torch.arange(T, device=x.device)
        for _ in range(self.num_freq_masks):
            width = torch.randint(0, self.freq_mask_width + 1, (B, 1), device=x.device)
            start = (torch.rand(B, 1, device=x.device) * (D - width + 1)).long()
            keep &= ~((freq >= start) & (freq < start + width))[:, None, :]
        for _ in range(self.num_time_masks):
            max_width = torch.clamp((lens.to(x.device).float() * self.time_mask_max_ratio).long(),
                                    max=self.time_mask_width)[:, None]
            width = (torch.rand(B, 1, device=x.device) * (max_width + 1).float()).long()
            start = (torch.rand(B, 1, device=x.device) * (lens.to(x.device)[:, None] - width + 1).float()).long()
            keep &= ~((time >= start) & (time < start + width))[:, :, None]
        return x * keep

    def _warp(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        # Stretch [0, c) to [0, c + w) and squeeze the rest of each utterance, by interpolation.
        out = x.clone()
        for b in range(x.shape[0]):
            n = int(lens[b])
            if n <= 2 * self.time_warp + 1:
                continue
            centre = int(torch.randint(self.time_warp, n - self.time_warp, (1,)))
            shift = int(torch.randint(-self.time_warp + 1, self.time_warp, (1,)))
            seg = x[b, :n].t()[None]  # (1, F, n)
            left = F.interpolate(seg[:, :, :centre], size=centre + shift, mode="linear", align_corners=False)
            right = F.interpolate(seg[:, :, centre:], size=n - centre - shift, mode="linear", align_corners=False)
            out[b, :n] = torch.cat([left, right], dim=2)[0].t()
        return out
