"""LSTM attention decoder with multi-head attention over the encoder output.

Token embeddings run through unidirectional LSTM layers; each output state
queries the encoder memory with multi-head attention; state and context go to
the output layer. Without input feeding the whole teacher-forced sequence is
one pass (``forward``, training). A search advances hypotheses one token at a
time instead (``init_state``, ``step``, ``select_state``): a hypothesis' LSTM
state ``(h, c)`` is all it carries, since its attention context is a function of
the current ``h`` and is never fed back; the attention keys and values of the
memory are projected once per utterance, not at every step.

>>> dec = AttentionDecoder(vocab_size=10, memory_dim=6, embed_dim=8, hidden=8, num_layers=1, heads=2).eval()
>>> memory, ys = torch.randn(1, 5, 6), torch.tensor([[9, 3, 4]])
>>> logits = dec(ys, torch.tensor([3]), memory, torch.tensor([5]))
>>> logits.shape
torch.Size([1, 3, 10])
>>> state = dec.init_state(memory, torch.tensor([5]))
>>> for i in range(3):
...     step_logits, state = dec.step(ys[:, i], state)
...     assert torch.allclose(step_logits, logits[:, i], atol=1e-5)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderState:
    """What :meth:`AttentionDecoder.step` needs of N hypotheses.

    ``keys``/``values``/``pad_mask`` belong to the memory, not to a hypothesis: their
    first dimension is 1 when all hypotheses decode the same utterance (a beam), so
    reordering the hypotheses never copies them.
    """

    h: torch.Tensor          # (layers, N, hidden): LSTM output state after the tokens fed so far
    c: torch.Tensor          # (layers, N, hidden): LSTM cell state
    keys: torch.Tensor       # (1 or N, heads, T', hidden/heads): projected attention keys of the memory
    values: torch.Tensor     # (1 or N, heads, T', hidden/heads)
    pad_mask: torch.Tensor   # (1 or N, 1, 1, T'): True at frames that may be attended (not padding)


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
        context, _ = self.attention(h, mem, mem, key_padding_mask=~_valid_frames(memory, memory_lens),
                                    need_weights=False)
        return self._logits(h, context)

    def _logits(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(torch.cat([h, context], dim=-1)))

    # ------------------------------------------------------------ one token at a time

    def init_state(self, memory: torch.Tensor, memory_lens: torch.Tensor) -> DecoderState:
        """The state before the first token (feed ``sos_id`` first) of hypotheses over ``memory``
        ``(M, T', D)``; M = 1 serves any number of hypotheses of one utterance."""
        keys, values = self._memory_keys_values(self.memory_proj(memory))
        zeros = memory.new_zeros(self.lstm.num_layers, memory.shape[0], self.lstm.hidden_size)
        return DecoderState(h=zeros, c=zeros.clone(), keys=keys, values=values,
                            pad_mask=_valid_frames(memory, memory_lens)[:, None, None, :])

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Logits ``(N, V)`` of the token after ``tokens`` (N,), the last token of each hypothesis,
        and the state with ``tokens`` fed. Equals ``forward`` on the whole prefix (eval mode)."""
        h, h_n, c_n = self._lstm_step(self.dropout(self.embed(tokens)), state.h, state.c)
        new_state = DecoderState(h=h_n, c=c_n, keys=state.keys, values=state.values, pad_mask=state.pad_mask)
        return self._logits(h, self._attend(h, state)), new_state

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """``self.lstm`` over one time step of ``x`` (N, embed), layer by layer with ``torch.lstm_cell``
        (an ``nn.LSTM`` call costs several times the arithmetic of one step at beam sizes); returns
        the top layer's output (N, hidden) and the new ``h``, ``c`` (layers, N, hidden)."""
        lstm, hs, cs = self.lstm, [], []
        for k in range(lstm.num_layers):
            if k > 0:
                x = F.dropout(x, lstm.dropout, self.training)   # nn.LSTM's dropout between layers
            h_k, c_k = torch.lstm_cell(x, (h[k], c[k]), getattr(lstm, f"weight_ih_l{k}"),
                                       getattr(lstm, f"weight_hh_l{k}"), getattr(lstm, f"bias_ih_l{k}"),
                                       getattr(lstm, f"bias_hh_l{k}"))
            hs.append(h_k)
            cs.append(c_k)
            x = h_k
        return x, torch.stack(hs), torch.stack(cs)

    @staticmethod
    def select_state(state: DecoderState, index: torch.Tensor) -> DecoderState:
        """The state of hypotheses ``index`` (K,) of ``state``: a beam's survivors, in their order."""
        memory_index = index if state.keys.shape[0] > 1 else slice(None)
        return DecoderState(h=state.h[:, index], c=state.c[:, index], keys=state.keys[memory_index],
                            values=state.values[memory_index], pad_mask=state.pad_mask[memory_index])

    def _memory_keys_values(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``nn.MultiheadAttention``'s key and value projections of ``mem`` (M, T', E), split into heads."""
        att = self.attention
        _, w_k, w_v = att.in_proj_weight.chunk(3)
        _, b_k, b_v = att.in_proj_bias.chunk(3)
        return _split_heads(F.linear(mem, w_k, b_k), att.num_heads), _split_heads(F.linear(mem, w_v, b_v), att.num_heads)

    def _attend(self, query: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """``self.attention(query, mem, mem)`` for one query ``(N, E)`` per hypothesis, on the
        cached keys and values (the same arithmetic as its eval-mode forward)."""
        att = self.attention
        w_q, _, _ = att.in_proj_weight.chunk(3)
        b_q, _, _ = att.in_proj_bias.chunk(3)
        q = _split_heads(F.linear(query[:, None], w_q, b_q), att.num_heads)                # (N, H, 1, d)
        n = q.shape[0]
        heads = F.scaled_dot_product_attention(
            q, state.keys.expand(n, -1, -1, -1), state.values.expand(n, -1, -1, -1),
            attn_mask=state.pad_mask.expand(n, -1, -1, -1),
            dropout_p=att.dropout if self.training else 0.0)
        return att.out_proj(heads.reshape(n, -1))


def _valid_frames(memory: torch.Tensor, memory_lens: torch.Tensor) -> torch.Tensor:
    """``(M, T')``: True at the frames of each memory that are not padding."""
    return torch.arange(memory.shape[1], device=memory.device)[None, :] < memory_lens.to(memory.device)[:, None]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(M, L, E)`` -> ``(M, heads, L, E / heads)``."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)
