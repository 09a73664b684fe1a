"""The hybrid acoustic model: a BLSTM over fbank frames, one output per pdf.

In the spirit of Kaldi's TED-LIUM BLSTM (``local/nnet3/run_blstm.sh``: 3 BLSTM
layers, 512 cells per direction with a recurrent projection, trained with
frame-level cross-entropy on senone alignments). Sizes are options; the default
here (3 x 192 cells, no projection) trains on AN4 in minutes on a CPU. It has the
parameters of the earlier default (3 x 256 cells, projection 128: 2.30 M vs 2.27 M)
but runs 2.7x faster per training step on CPU, because ATen hands an LSTM without
projection to oneDNN's fused kernel and steps a projected one itself (issue #17;
RESULTS.md, session 27). ``proj`` between 1 and ``cells - 1`` adds the projection.

The model owns its input normalisation (global CMVN of the train fbank, as
buffers), so a checkpoint is self-contained.

Chunked evaluation (:func:`chunk_windows`, :meth:`HybridBLSTM.utterance_log_probs`)
mirrors chunked training: each chunk of ``chunk_width`` frames sees up to
``left_context`` / ``right_context`` extra frames on each side (fewer at the
utterance edges), and only the chunk's own frames are output, as Kaldi's nnet3
does with ``extra-left-context``/``extra-right-context``.

>>> import torch
>>> m = HybridBLSTM(HybridConfig(num_pdfs=7, cells=8, proj=4, layers=2))
>>> m.utterance_log_probs(torch.randn(50, 80), chunk_width=20, left_context=5, right_context=5).shape
torch.Size([50, 7])
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# Said once per process by ATen for every projected LSTM on CPU; nothing the caller can act on.
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")


@dataclass
class HybridConfig:
    num_pdfs: int
    feat_dim: int = 80
    cells: int = 192
    #: Recurrent projection size; 0 (or >= ``cells``): none.
    proj: int = 0
    layers: int = 3
    dropout: float = 0.1
    #: Normalisation the caller applies before the model's own global CMVN: "global" (none) or
    #: "speaker" (per-speaker mean subtraction, ``hybrid.load_fbank(..., cmn="speaker")``).
    input_cmn: str = "global"

    @property
    def projection(self) -> int:
        """The recurrent projection the LSTM has: ``proj`` if it is smaller than ``cells``, else 0 (none)."""
        return self.proj if 0 < self.proj < self.cells else 0

    @property
    def layer_output(self) -> int:
        """Outputs per direction of each BLSTM layer: the projection's, else the cells'."""
        return self.projection or self.cells

    def to_dict(self) -> dict:
        return asdict(self)


def chunk_windows(num_frames: int, chunk_width: int, left_context: int, right_context: int):
    """``(window_start, window_end, chunk_start, chunk_end)`` covering ``[0, num_frames)`` in chunks.

    >>> chunk_windows(50, 20, 5, 5)
    [(0, 25, 0, 20), (15, 45, 20, 40), (35, 50, 40, 50)]
    """
    if chunk_width <= 0 or left_context < 0 or right_context < 0:
        raise ValueError("chunk_width must be > 0 and contexts >= 0")
    out = []
    for start in range(0, num_frames, chunk_width):
        end = min(start + chunk_width, num_frames)
        out.append((max(0, start - left_context), min(num_frames, end + right_context), start, end))
    return out


class HybridBLSTM(nn.Module):
    """Projected BLSTM + linear output layer; ``forward`` returns pdf logits."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = config
        self.register_buffer("feat_mean", torch.zeros(config.feat_dim))
        self.register_buffer("feat_std", torch.ones(config.feat_dim))
        self.blstm = nn.LSTM(config.feat_dim, config.cells, num_layers=config.layers,
                             bidirectional=True, proj_size=config.projection,
                             batch_first=True, dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(2 * config.layer_output, config.num_pdfs)

    def set_cmvn(self, mean, std) -> None:
        self.feat_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feat_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-5))

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``feats (B, T, D)`` raw fbank, ``lens (B,)`` -> logits ``(B, T, num_pdfs)``.

        Logits at padded positions (``t >= lens[b]``) are meaningless; every valid position is
        what :meth:`forward_packed` gives (the same weights and recursion, to float rounding).
        Each layer runs its two directions as unidirectional LSTMs over *unpacked* zero-padded
        time-major tensors, the reverse one over each sequence reversed within its own length
        (so its padding stays at the end, after every valid step): on CPU this lets ATen
        precompute the input projection of all time steps in one GEMM and keep the batch size
        constant over time, about twice as fast as the packed path, which steps the input
        projection frame by frame over a shrinking batch (issue #17).
        """
        x = ((feats - self.feat_mean) / self.feat_std).transpose(0, 1)   # (T, B, D)
        T, B = x.shape[0], x.shape[1]
        lens = lens.to(x.device)
        ragged = bool((lens != T).any())
        if ragged:
            t = torch.arange(T, device=x.device).unsqueeze(1)
            rev = torch.where(t < lens, lens - 1 - t, t)            # (T, B): a permutation per column

        def reverse(y):
            return y.gather(0, rev.unsqueeze(-1).expand_as(y)) if ragged else y.flip(0)

        lstm, weights = self.blstm, self.blstm._flat_weights
        per_dir = len(weights) // (2 * lstm.num_layers)
        out_size = lstm.proj_size or lstm.hidden_size
        h0 = x.new_zeros(1, B, out_size)
        c0 = x.new_zeros(1, B, lstm.hidden_size)
        for layer in range(lstm.num_layers):
            if layer > 0 and lstm.dropout > 0:
                x = nn.functional.dropout(x, lstm.dropout, self.training)
            base = 2 * layer * per_dir
            fwd, _, _ = torch._VF.lstm(x, (h0, c0), weights[base:base + per_dir], lstm.bias, 1, 0.0,
                                       self.training, False, False)
            bwd, _, _ = torch._VF.lstm(reverse(x), (h0, c0), weights[base + per_dir:base + 2 * per_dir],
                                       lstm.bias, 1, 0.0, self.training, False, False)
            x = torch.cat([fwd, reverse(bwd)], dim=-1)
        return self.output(self.dropout(x.transpose(0, 1)))

    def forward_packed(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """The reference path of :meth:`forward`: ``nn.LSTM`` over a packed batch (padding: zeros)."""
        x = (feats - self.feat_mean) / self.feat_std
        packed = pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.blstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return self.output(self.dropout(out))

    @torch.no_grad()
    def utterance_log_probs(self, feats: torch.Tensor, chunk_width: int, left_context: int,
                            right_context: int) -> torch.Tensor:
        """Log-posteriors ``(T, num_pdfs)`` of one utterance, computed chunk by chunk as in training."""
        return self.utterances_log_probs([feats], chunk_width, left_context, right_context)[0]

    @torch.no_grad()
    def utterances_log_probs(self, utterances: list[torch.Tensor], chunk_width: int, left_context: int,
                             right_context: int) -> list[torch.Tensor]:
        """:meth:`utterance_log_probs` of several utterances, the chunks of all of them in one batch:
        the same log-posteriors (to float rounding), in larger products: on one CPU thread, 8 AN4
        utterances at a time run 1.33-1.43x faster than a call per utterance."""
        windows = [(u, w) for u, feats in enumerate(utterances)
                   for w in chunk_windows(feats.shape[0], chunk_width, left_context, right_context)]
        pieces = [utterances[u][w0:w1] for u, (w0, w1, _, _) in windows]
        lens = torch.tensor([len(x) for x in pieces], dtype=torch.long)
        batch = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        log_probs = torch.log_softmax(self(batch.to(self.feat_mean.device), lens).float(), dim=-1).cpu()
        per_utterance: list[list[torch.Tensor]] = [[] for _ in utterances]
        for i, (u, (w0, _, c0, c1)) in enumerate(windows):
            per_utterance[u].append(log_probs[i, c0 - w0:c1 - w0])
        return [torch.cat(chunks) for chunks in per_utterance]


def windows_to_batch(feats: torch.Tensor, windows) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(N, max_len, D)`` batch of ``feats[w0:w1]`` windows, and their lengths."""
    lens = torch.tensor([w1 - w0 for w0, w1, _, _ in windows], dtype=torch.long)
    batch = feats.new_zeros(len(windows), int(lens.max()), feats.shape[1])
    for i, (w0, w1, _, _) in enumerate(windows):
        batch[i, :w1 - w0] = feats[w0:w1]
    return batch, lens
