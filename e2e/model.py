"""The E2E ASR model: BLSTM encoder, CTC head, LSTM attention decoder, optional auxiliary loss.

``L = (1 - ctc_weight)·L_att + ctc_weight·L_ctc + aux_weight·L_aux``, where
``L_aux`` sits at BLSTM layer ``aux_layer`` behind its own linear layer:

- ``aux: smoothed_ce``: frame-wise CE on senones (10 ms labels brought to 40 ms
  by :func:`weakalign.align.loader.subsample_labels`) against
  ``(1 - m)·one-hot + m·uniform``, m = ``aux_smoothing`` (arXiv 2311.14835);
- ``aux: onehot_ce``: the same with m = 0 (the paper's loss-weighting baseline);
- ``aux: senone_ctc``: intermediate CTC over the senone sequence the encoder rate can see: the
  40 ms labels (as for the CEs) with repeats collapsed, senone ``k`` as class ``k + 1``, blank 0
  (the paper's auxiliary-CTC contrast on the same triphone information);
- ``aux: ctc``: intermediate CTC over the BPE units;
- ``aux: none``.

For the senone terms, ``aux_targets`` picks each encoder frame's 40 ms target from its
7-frame receptive window (see :mod:`weakalign.align.loader`): ``centre`` (the centre
frame's senone), ``majority`` (the window's most frequent senone) or ``soft`` (the
window's senone histogram, mixed with the uniform by :func:`~weakalign.e2e.losses.soft_target_ce`).

See ``docs/E2E_INTERFACE.md`` for the contract with decoding and EM-Network code.

>>> cfg = dict(DEFAULT_MODEL_CONFIG, conv_channels=4, enc_hidden=8, enc_proj=8, dec_embed=8, dec_hidden=8,
...            aux="smoothed_ce", aux_weight=1.0, num_senones=5)
>>> model = E2EModel(cfg, vocab_size=12)
>>> batch = {"feats": torch.randn(2, 40, 80), "feat_lens": torch.tensor([40, 32]),
...          "tokens": [[1, 2], [3]], "senone": torch.randint(0, 5, (2, 40))}
>>> loss, stats = model(batch)
>>> sorted(stats)
['acc', 'aux_acc', 'loss', 'loss_att', 'loss_aux', 'loss_ctc']
>>> loss, stats = E2EModel(dict(cfg, aux_targets="soft"), vocab_size=12)(batch)
>>> bool(torch.isfinite(loss)), "aux_acc" in stats
(True, True)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..align.loader import IGNORE_INDEX, subsample_labels, window_label_distribution
from .config import SENONE_AUX_KINDS
from .decode import greedy_ctc
from .decoder import AttentionDecoder
from .encoder import BLSTMEncoder, EncoderOutput, GlobalCMVN
from .losses import attention_loss, ctc_loss, decoder_io, frame_accuracy, smoothed_ce, soft_target_ce
from .metrics import GreedyErrors, StatsMean
from .specaug import SpecAugment

AUX_KINDS = ("none", "smoothed_ce", "onehot_ce", "senone_ctc", "ctc")
AUX_TARGETS = ("centre", "majority", "soft")

# Model part of conf/defaults.yaml, so the model can be built from a partial dict in tests.
DEFAULT_MODEL_CONFIG = {
    "idim": 80, "conv_channels": 32, "enc_hidden": 256, "enc_proj": 256, "enc_layers": 6, "enc_dropout": 0.2,
    "enc_residual": False, "enc_layer_norm": False, "dec_embed": 128, "dec_hidden": 256, "dec_layers": 1, "dec_heads": 4, "dec_dropout": 0.1,
    "specaug": True, "num_freq_masks": 2, "freq_mask_width": 27, "num_time_masks": 2, "time_mask_width": 40,
    "time_mask_max_ratio": 0.2, "time_warp": 0,
    "ctc_weight": 0.3, "lsm_weight": 0.1,
    "aux": "none", "aux_layer": 3, "aux_weight": 0.0, "aux_smoothing": 0.5, "num_senones": None,
    "aux_targets": "centre",
}


class E2EModel(nn.Module):
    """The trainer's model interface (ESPnet2 style; see ``docs/E2E_INTERFACE.md``), which a model
    with extra training terms (e.g. :class:`weakalign.e2e.emnet.EMNetModel`) overrides:

    - ``forward(batch) -> (loss, stats)``: one training/dev step, ``stats`` one float per term;
    - :meth:`validate`: the dev stats of an epoch (mean ``stats`` plus greedy-CTC ``wer``/``cer``);
    - :meth:`export_state_dict`: the state dict that ``model_avg.pt`` keeps (what decoding loads);
    - :meth:`plot_extras`: the run's figures beyond ``loss_curves.png`` (none here).
    """

    def __init__(self, config: dict, vocab_size: int):
        super().__init__()
        c = {**DEFAULT_MODEL_CONFIG, **config}
        self.config = c
        self.vocab_size = vocab_size
        self.blank_id = 0
        self.sos_id = self.eos_id = vocab_size - 1
        self.ctc_weight = float(c["ctc_weight"])
        self.aux = c["aux"] or "none"
        if self.aux not in AUX_KINDS:
            raise ValueError(f"aux must be one of {AUX_KINDS}, got {self.aux!r}")
        self.aux_weight = float(c["aux_weight"]) if self.aux != "none" else 0.0
        self.aux_layer = int(c["aux_layer"])
        if self.aux != "none" and not 1 <= self.aux_layer <= int(c["enc_layers"]):
            raise ValueError(f"aux_layer must be in 1..{c['enc_layers']}, got {self.aux_layer}")
        self.aux_targets = c["aux_targets"]
        if self.aux_targets not in AUX_TARGETS:
            raise ValueError(f"aux_targets must be one of {AUX_TARGETS}, got {self.aux_targets!r}")

        self.cmvn = GlobalCMVN(c["idim"])
        self.specaug = None
        if c["specaug"]:
            self.specaug = SpecAugment(c["num_freq_masks"], c["freq_mask_width"], c["num_time_masks"],
                                       c["time_mask_width"], c["time_mask_max_ratio"], c["time_warp"],
                                       keep_frames_aligned=self.aux in ("smoothed_ce", "onehot_ce"))
        self.encoder = BLSTMEncoder(c["idim"], c["conv_channels"], c["enc_hidden"], c["enc_proj"],
                                    c["enc_layers"], c["enc_dropout"], bool(c["enc_residual"]),
                                    bool(c["enc_layer_norm"]))
        d = self.encoder.output_dim
        self.ctc_head = nn.Linear(d, vocab_size)
        self.decoder = None
        if self.ctc_weight < 1.0:
            self.decoder = AttentionDecoder(vocab_size, d, c["dec_embed"], c["dec_hidden"], c["dec_layers"],
                                            c["dec_heads"], c["dec_dropout"])
        self.aux_head = None
        if self.aux in SENONE_AUX_KINDS:
            if not c["num_senones"]:
                raise ValueError(f"aux: {self.aux} needs num_senones (taken from the alignment data)")
            self.num_senones = int(c["num_senones"])
            self.aux_head = nn.Linear(d, self.num_senones + (self.aux == "senone_ctc"))
        elif self.aux == "ctc":
            self.aux_head = nn.Linear(d, vocab_size)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> EncoderOutput:
        x = self.cmvn(feats)
        # Padding stays zero (the mean) after normalisation, so it looks like silence to the convs.
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < feat_lens.to(x.device)[:, None]
        x = x * valid[:, :, None]
        if self.training and self.specaug is not None:
            x = self.specaug(x, feat_lens)
        return self.encoder(x, feat_lens)

    def ctc_log_probs(self, enc_out: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.ctc_head(enc_out), dim=-1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        device = self.ctc_head.weight.device
        feats = batch["feats"].to(device)
        feat_lens = batch["feat_lens"].to(device)
        tokens = batch["tokens"]
        enc = self.encode(feats, feat_lens)
        stats = {}

        loss_ctc = ctc_loss(self.ctc_log_probs(enc.out), enc.lens, tokens, self.blank_id)
        stats["loss_ctc"] = loss_ctc.item()
        loss = self.ctc_weight * loss_ctc

        if self.decoder is not None:
            ys_in, ys_out, ys_lens = decoder_io(tokens, self.sos_id, self.eos_id, device)
            logits = self.decoder(ys_in, ys_lens, enc.out, enc.lens)
            loss_att, acc = attention_loss(logits, ys_out, float(self.config["lsm_weight"]))
            stats["loss_att"] = loss_att.item()
            stats["acc"] = acc.item()
            loss = loss + (1.0 - self.ctc_weight) * loss_att

        if self.aux_head is not None:
            loss_aux, aux_acc = self._aux_loss(enc, batch, feats.shape[1])
            stats["loss_aux"] = loss_aux.item()
            if aux_acc is not None:
                stats["aux_acc"] = aux_acc.item()
            loss = loss + self.aux_weight * loss_aux

        stats["loss"] = loss.item()
        return loss, stats

    def _aux_loss(self, enc: EncoderOutput, batch: dict, num_frames: int):
        """``(loss, accuracy)`` of the aux term (accuracy ``None`` for the aux CTCs).

        For the senone CE, ``aux_targets`` picks the 40 ms targets: ``centre`` and ``majority``
        feed :func:`subsample_labels` of that mode to :func:`smoothed_ce`; ``soft`` feeds the
        window histograms to :func:`soft_target_ce`. The accuracy is always against a hard
        label: the mode's own (centre or majority), and the majority label for ``soft``
        (the histogram's argmax, ties as in ``subsample_labels``).
        """
        hidden = enc.layers[self.aux_layer - 1]
        if self.aux == "ctc":
            log_probs = F.log_softmax(self.aux_head(hidden), dim=-1)
            return ctc_loss(log_probs, enc.lens, batch["tokens"], self.blank_id), None
        senone = self._frame_senones(batch, num_frames, hidden.device)
        lengths = batch["feat_lens"].to(hidden.device)
        mode = "centre" if self.aux_targets == "centre" else "majority"
        targets = subsample_labels(senone, lengths, mode=mode)
        if targets.shape[1] != hidden.shape[1]:
            raise RuntimeError(f"subsampled labels have {targets.shape[1]} frames, encoder {hidden.shape[1]}")
        if self.aux == "senone_ctc":
            log_probs = F.log_softmax(self.aux_head(hidden), dim=-1)
            return ctc_loss(log_probs, enc.lens, collapsed_label_sequences(targets, shift=1), blank=0), None
        smoothing = float(self.config["aux_smoothing"]) if self.aux == "smoothed_ce" else 0.0
        logits = self.aux_head(hidden)
        if self.aux_targets != "soft":
            return smoothed_ce(logits, targets, smoothing)
        dist, valid = window_label_distribution(senone, lengths, self.num_senones)
        return soft_target_ce(logits, dist, valid, smoothing), frame_accuracy(logits, targets)

    def _frame_senones(self, batch: dict, num_frames: int, device) -> torch.Tensor:
        """The batch's 10 ms senones as ``(B, num_frames)`` (-100 padded), ids checked against ``num_senones``."""
        if "senone" not in batch:
            raise ValueError(f"aux: {self.aux} needs senone alignments, but the batch has none "
                             f"(cuts {batch.get('cut_ids', [])[:3]}...); train on the exported *_ali cuts")
        senone = batch["senone"].to(device)
        if senone.shape[1] < num_frames:
            senone = F.pad(senone, (0, num_frames - senone.shape[1]), value=IGNORE_INDEX)
        senone = senone[:, :num_frames]
        # Every frame is checked, not just the centres: majority and soft targets read them all.
        bad = (senone >= self.num_senones) | ((senone < 0) & (senone != IGNORE_INDEX))
        if bool(bad.any()):
            rows = sorted(set(torch.nonzero(bad)[:, 0].tolist()))
            raise ValueError(f"senone ids outside 0..{self.num_senones - 1} in cuts "
                             f"{[batch['cut_ids'][i] for i in rows] if 'cut_ids' in batch else rows}")
        return senone

    # -- the trainer's interface beyond forward

    @torch.no_grad()
    def validate(self, loader, tokenizer) -> dict:
        """Dev losses per term, ``acc``, ``aux_acc`` and greedy-CTC ``wer`` and ``cer`` (percent).

        Mean of ``forward``'s stats over ``loader`` (each batch weighted by its utterance count),
        in eval mode; the model is back in training mode afterwards.
        """
        self.eval()
        mean = StatsMean()
        errors = GreedyErrors()
        for batch in loader:
            _, stats = self(batch)
            mean.add(stats, len(batch["cut_ids"]))
            feats = batch["feats"].to(self.ctc_head.weight.device)
            enc = self.encode(feats, batch["feat_lens"].to(feats.device))
            errors.add(batch["texts"], [tokenizer.decode(t) for t in greedy_ctc(self.ctc_log_probs(enc.out), enc.lens)])
        self.train()
        return {**mean.result(), **errors.rates()}

    def export_state_dict(self, state_dict: dict | None = None) -> dict:
        """The inference view of ``state_dict`` (default: this model's): the entries a model built by
        ``weakalign.e2e.build.build_model(config, V, student_only=True)`` loads. A plain model
        exports everything."""
        return self.state_dict() if state_dict is None else state_dict

    def plot_extras(self, metrics: list[dict], run_dir: str | Path, title: str = "") -> None:
        """Figures of this kind of model from the ``metrics.jsonl`` rows, into ``run_dir`` (none here)."""


def collapsed_label_sequences(labels: torch.Tensor, shift: int = 0, pad: int = IGNORE_INDEX) -> list[list[int]]:
    """Each row of ``labels`` (B, T) without its ``pad`` frames and with runs of one label collapsed
    to one, plus ``shift``: a CTC target that always fits T frames.

    >>> collapsed_label_sequences(torch.tensor([[4, 4, 2, 2, 4, -100], [0, 0, 0, -100, -100, -100]]), shift=1)
    [[5, 3, 5], [1]]
    """
    rows = []
    for row in labels:
        kept = row[row != pad]
        rows.append((torch.unique_consecutive(kept) + shift).tolist())
    return rows
