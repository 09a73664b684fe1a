"""A tiny random model satisfying docs/E2E_INTERFACE.md, to test search algorithms.

It is a stand-in for the *model* only (the real one is trained elsewhere); the
searches under test run for real on its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EncOut:
    out: torch.Tensor
    lens: torch.Tensor
    layers: list


class TinyDecoder(nn.Module):
    """Embedding -> LSTM -> dot-product attention over the memory -> logits (teacher-forced)."""

    def __init__(self, vocab: int, dim: int, sharpness: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.out = nn.Linear(2 * dim, vocab)
        with torch.no_grad():
            self.out.weight.mul_(sharpness)

    def forward(self, ys_in, ys_in_lens, memory, memory_lens):
        h, _ = self.lstm(self.embed(ys_in))
        att = h @ memory.transpose(1, 2)                                       # (N, L, T)
        mask = torch.arange(memory.shape[1])[None, None, :] >= memory_lens[:, None, None]
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.out(torch.cat([h, att @ memory], dim=-1))


class TinyModel(nn.Module):
    def __init__(self, vocab: int = 12, dim: int = 16, decoder: bool = True, sharpness: float = 3.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.vocab_size = vocab
        self.proj = nn.Linear(80, dim)
        self.ctc_head = nn.Linear(dim, vocab)
        with torch.no_grad():
            self.ctc_head.weight.mul_(sharpness)
        self.decoder = TinyDecoder(vocab, dim, sharpness) if decoder else None

    def encode(self, feats, feat_lens):
        x = torch.tanh(self.proj(feats))[:, ::4]
        lens = (feat_lens + 3) // 4
        return EncOut(out=x, lens=lens, layers=[x])

    def ctc_log_probs(self, enc_out):
        return torch.log_softmax(self.ctc_head(enc_out), dim=-1)


class TinyTokenizer:
    """Ids 1..V-2 are the letters of ``alphabet``; 0 blank, V-1 sos/eos."""

    def __init__(self, vocab: int = 12):
        self.vocab_size = vocab
        self.blank_id, self.sos_id, self.eos_id = 0, vocab - 1, vocab - 1
        self.alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: vocab - 2]

    def decode(self, ids):
        return " ".join(self.alphabet[i - 1] for i in ids if 0 < i < self.vocab_size - 1)
