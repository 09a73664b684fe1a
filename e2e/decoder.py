"""LSTM attention decoder with multi-head attention over the encoder output.

Token embeddings run through unidirectional LSTM layers; each output state
queries the encoder memory with multi-head attention; state and context go to
the output layer. Without input feeding the whole teacher-forced sequence is
one pass, and a beam search calls the same function on its prefixes.

>>> dec = AttentionDecoder(vocab_size=10, memory_dim=6, embed_dim=8, hidden=8, num_layers=1, heads=2)
>>> logits = dec(torch.tensor([[9, 3, 4]]), torch.tensor([3]), torch.randn(1, 5, 6), torch.tensor([5]))
>>> logits.shape
torch.Size([1, 3, 10])
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size: int, memory_dim: int, embed_dim: int = 128, hidden: int = 256,
                 num_layers: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.memory_proj = nn.Linear(memory_dim, hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(2 * hidden, vocab_size)

    def forward(self, ys_in: torch.Tensor, ys_in_lens: torch.Tensor, memory: torch.Tensor,
                memory_lens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``(N, L, V)``; ``ys_in`` starts with ``sos_id``."""
        # Unidirectional, so padding after a sequence never reaches its valid states: no packing
        # needed (PyTorch's CPU LSTM backward on packed input is several times slower).
        h, _ = self.lstm(self.dropout(self.embed(ys_in)))
        mem = self.memory_proj(memory)
        pad_mask = torch.arange(memory.shape[1], device=memory.device)[None, :] >= memory_lens.to(memory.device)[:, None]
        context, _ = self.attention(h, mem, mem, key_padding_mask=pad_mask, need_weights=False)
        return self.output(self.dropout(torch.cat([h, context], dim=-1)))
