"""Parameter initialisation of the E2E models.

PyTorch's defaults (uniform ±1/sqrt(fan) for LSTMs, Kaiming-uniform with a=sqrt(5) for linear
layers) leave a plain stack of projected BLSTMs almost deaf at the start: each projection
shrinks the signal (std ~0.03 per layer on AN4 fbank), so the gates of layers 2..6 see mostly
their biases and the top layer's output does not change when the input does. CTC then sits on
its all-blank plateau for thousands of updates. ``lecun`` (ESPnet's RNN default) draws every
weight from N(0, 1/fan_in), zeroes the biases and sets the LSTM forget-gate bias to 1, which
keeps the signal at std ~0.25 through six layers. Normalisation layers (LayerNorm, as in the
EM-Network teacher's oracle and fusion module, or ``enc_layer_norm``) keep their own init, scale 1
and shift 0, as ESPnet2's ``initialize`` resets them: zeroing their 1-d scale as a "bias" would make
their output constant and cut every gradient through them, for good.

>>> from torch import nn
>>> lstm = nn.LSTM(4, 3)
>>> initialize(lstm, "lecun")
>>> lstm.bias_ih_l0[3:6].tolist(), lstm.bias_hh_l0.abs().sum().item()
([1.0, 1.0, 1.0], 0.0)
>>> norm = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
>>> initialize(norm, "lecun")
>>> norm[1].weight.tolist(), norm[0].bias.abs().sum().item()
([1.0, 1.0, 1.0, 1.0], 0.0)
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEMES = ("pytorch", "lecun")
#: Layers whose 1-d parameters are a scale and a shift, not biases: they keep PyTorch's init.
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def initialize(model: nn.Module, scheme: str = "lecun") -> None:
    """Re-initialise ``model``'s parameters in place (``pytorch`` keeps the defaults)."""
    if scheme not in SCHEMES:
        raise ValueError(f"init must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "pytorch":
        return
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.zero_()
            else:
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in))
        for module in model.modules():
            if isinstance(module, nn.LSTM):
                _forget_bias_to_one(module)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0)
            elif isinstance(module, NORMS):
                module.reset_parameters()


def _forget_bias_to_one(lstm: nn.LSTM) -> None:
    # PyTorch orders the gates (input, forget, cell, output); one of the two biases carries it.
    for name, p in lstm.named_parameters():
        if name.startswith("bias_ih"):
            hidden = p.shape[0] // 4
            p[hidden:2 * hidden] = 1.0
