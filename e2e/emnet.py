"""EM-Network: oracle-guided self-distillation (Yoon et al., ICML 2023) on the E2E model.

The **student** (θ) is the trainer's :class:`~weakalign.e2e.model.E2EModel`. The
**teacher** (φ ⊃ θ) is the student's encoder, a fusion module that lets the encoder
output attend to an *oracle guidance* ``r`` computed from the target sequence, and
the student's own CTC output layer (``emnet_teacher_own_head: true`` gives the
teacher a head of its own):

- :class:`OracleEncoder`: target BPE ids (as ``[sos] y [eos]``) -> embedding +
  sinusoidal positions -> one Transformer encoder layer -> ``r`` (model dim = the
  encoder's output size).
- :class:`FusionModule`: self-attention over the encoder output; its result queries
  a cross-attention with ``r`` as keys and values (each with residual + layer norm).

Training objective (config keys ``emnet_*``, see :data:`EMNET_DEFAULTS`)::

    L = L_student + w_ctc · L_ctc_teacher [+ w_att · L_att_teacher] + emnet_alpha · (L_kd_ctc [+ L_kd_att])

with ``(w_ctc, w_att)`` the student's own ``(ctc_weight, 1 - ctc_weight)`` by default
(``emnet_teacher_weights: unit`` gives 1.0 each, the paper's sum for a CTC-only model).
``emnet_oracle: false`` is the **matched control**: no oracle, fusion or KD, the teacher
terms are the student's own CTC (and attention) losses again with the same weights, so
the same CTC weight reaches the encoder and the oracle is the only difference.

``L_student`` is the trainer's usual loss (CTC + attention + any aux term, computed by
``E2EModel.forward`` itself). For CTC the oracle sees the *unmasked* target (CTC's
many-to-one mapping stops the teacher from copying it) and ``L_kd_ctc`` is the squared
L2 distance between teacher and student frame posteriors, summed over the vocabulary and
averaged over valid frames. With ``emnet_aed: true`` the oracle also sees the target with
tokens replaced by a mask id with probability ``emnet_mask_prob`` (never sos/eos/padding),
the student's decoder attends to the fused states, and ``L_kd_att`` is
``KL(teacher || student)`` of the decoder outputs per token. KD gradients reach teacher
and student (online self-distillation) unless ``emnet_detach_teacher: true``.

Inference uses the student only: :meth:`EMNetModel.export_state_dict` (also
``student_state_dict``) has exactly the keys of a plain ``E2EModel`` of the same config
(teacher modules live under ``emnet.``). The trainer sees only the model interface of
``E2EModel``: ``validate`` adds the teacher's greedy-CTC errors (``wer_teacher``, ...),
``plot_extras`` draws ``emnet_curves.png``.

>>> from weakalign.e2e.model import DEFAULT_MODEL_CONFIG
>>> cfg = dict(DEFAULT_MODEL_CONFIG, conv_channels=4, enc_hidden=8, enc_proj=8, dec_embed=8, dec_hidden=8,
...            dec_heads=2, emnet=True, emnet_heads=2, emnet_ffn=16, emnet_aed=True)
>>> model = EMNetModel(cfg, vocab_size=12)
>>> batch = {"feats": torch.randn(2, 40, 80), "feat_lens": torch.tensor([40, 32]), "tokens": [[1, 2], [3]]}
>>> loss, stats = model(batch)
>>> sorted(k for k in stats if k.startswith("loss"))  # doctest: +NORMALIZE_WHITESPACE
['loss', 'loss_att', 'loss_att_student', 'loss_att_teacher', 'loss_ctc', 'loss_ctc_student',
 'loss_ctc_teacher', 'loss_kd', 'loss_kd_att', 'loss_kd_ctc', 'loss_student']
>>> sorted(model.student_state_dict()) == sorted(E2EModel(cfg, 12).state_dict())
True
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..align.loader import IGNORE_INDEX
from .checkpoints import average_state_dicts, checkpoint_dir, latest_checkpoint
from .decode import greedy_ctc
from .emnet_plots import plot_teacher_student_curves
from .encoder import EncoderOutput
from .losses import attention_loss, ctc_loss, decoder_io
from .metrics import GreedyErrors, StatsMean
from .model import E2EModel

log = logging.getLogger("weakalign")

#: The EM-Network keys of a config and their defaults (the paper's α = 2, mask p = 0.5).
EMNET_DEFAULTS = {
    "emnet": False,                 # build the EM-Network wrapper (student + teacher)
    "emnet_alpha": 2.0,             # weight of the distillation loss
    "emnet_aed": False,             # also the attention branch (hybrid CTC/attention setting)
    "emnet_mask_prob": 0.5,         # share of oracle tokens masked for the attention branch
    "emnet_detach_teacher": False,  # True: KD gradients reach the student only
    "emnet_teacher_own_head": False,  # True: the teacher gets its own CTC output layer
    "emnet_heads": 4,               # attention heads of the oracle layer and the fusion module
    "emnet_ffn": 512,               # feed-forward size of the oracle's Transformer layer
    "emnet_dropout": 0.1,
    # Teacher terms' weights: "student" = the student's own (ctc_weight on CTC, 1 - ctc_weight on
    # attention), so oracle and no-oracle runs put the same CTC weight on the shared encoder;
    # "unit" = 1.0 each, the paper's L_ctc(student) + L_ctc(teacher) for a CTC-only student.
    "emnet_teacher_weights": "student",
    # False: the matched control. No oracle, no fusion, no KD: the teacher terms are the student's own
    # losses again with the teacher weights, so the only difference from EM-Network is the oracle.
    "emnet_oracle": True,
}

TEACHER_WEIGHT_MODES = ("student", "unit")

# EM-Network's teacher modules live under this prefix; the decoding model holds none of them.
TEACHER_PREFIX = "emnet."


def strip_teacher(state_dict: dict) -> dict:
    """``state_dict`` without the EM-Network teacher's entries (keys under ``emnet.``)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(TEACHER_PREFIX)}


def is_emnet_config(config: dict) -> bool:
    return bool(config.get("emnet"))


# ---------------------------------------------------------------- oracle inputs

def oracle_targets(tokens: list[list[int]], sos: int, eos: int, pad: int, device=None):
    """``[sos] y [eos]`` per utterance, padded with ``pad``: ``(ys (N, L), lens (N,))``.

    sos/eos frame every sequence, so even an empty target gives the oracle two keys.

    >>> ys, lens = oracle_targets([[3, 4], [5]], sos=9, eos=9, pad=11)
    >>> ys.tolist(), lens.tolist()
    ([[9, 3, 4, 9], [9, 5, 9, 11]], [4, 3])
    """
    lens = torch.tensor([len(t) + 2 for t in tokens], dtype=torch.long)
    ys = torch.full((len(tokens), int(lens.max())), pad, dtype=torch.long)
    for i, t in enumerate(tokens):
        ys[i, : len(t) + 2] = torch.tensor([sos, *t, eos], dtype=torch.long)
    return ys.to(device), lens.to(device)


def maskable_positions(ys: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """True at real target tokens of ``[sos] y [eos] pad...``: never sos, eos or padding."""
    pos = torch.arange(ys.shape[1], device=ys.device)[None, :]
    return (pos >= 1) & (pos < lens.to(ys.device)[:, None] - 1)


def mask_oracle_tokens(ys: torch.Tensor, lens: torch.Tensor, prob: float, mask_id: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``ys`` with each real token replaced by ``mask_id`` with probability ``prob``.

    >>> ys, lens = oracle_targets([[3, 4, 5]], sos=9, eos=9, pad=11)
    >>> mask_oracle_tokens(ys, lens, 1.0, mask_id=10).tolist()
    [[9, 10, 10, 10, 9]]
    """
    draw = torch.rand(ys.shape, generator=generator, device="cpu").to(ys.device)
    masked = (draw < prob) & maskable_positions(ys, lens)
    return ys.masked_fill(masked, mask_id)


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """``(length, dim)`` sin/cos position encodings of "Attention is all you need"."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


def padding_mask(lens: torch.Tensor, length: int) -> torch.Tensor:
    """True at padded positions (the ``key_padding_mask`` convention of ``nn.MultiheadAttention``)."""
    return torch.arange(length, device=lens.device)[None, :] >= lens[:, None]


# ---------------------------------------------------------------- modules

class OracleEncoder(nn.Module):
    """Target ids -> oracle guidance ``r`` (N, L, dim). Ids ``V`` (mask) and ``V+1`` (pad) are its own."""

    def __init__(self, vocab_size: int, dim: int, heads: int = 4, ffn: int = 512, dropout: float = 0.1):
        super().__init__()
        self.mask_id = vocab_size
        self.pad_id = vocab_size + 1
        self.dim = dim
        self.embed = nn.Embedding(vocab_size + 2, dim, padding_idx=self.pad_id)
        self.dropout = nn.Dropout(dropout)
        self.layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, batch_first=True)

    def forward(self, ys: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r (N, L, dim), pad_mask (N, L))``."""
        pad = padding_mask(lens.to(ys.device), ys.shape[1])
        x = self.embed(ys) * math.sqrt(self.dim) + sinusoidal_positions(ys.shape[1], self.dim, ys.device)
        r = self.layer(self.dropout(x), src_key_padding_mask=pad)
        return r, pad


class FusionModule(nn.Module):
    """Self-attention over the encoder output, then cross-attention to ``r`` (residual + layer norm each)."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, r: torch.Tensor, r_pad: torch.Tensor) -> torch.Tensor:
        x_pad = padding_mask(x_lens.to(x.device), x.shape[1])
        h, _ = self.self_attn(x, x, x, key_padding_mask=x_pad, need_weights=False)
        h = self.norm1(x + self.dropout(h))
        c, _ = self.cross_attn(h, r, r, key_padding_mask=r_pad, need_weights=False)
        return self.norm2(h + self.dropout(c))


class EMNetTeacher(nn.Module):
    """The teacher's extra modules: oracle encoder, fusion module and (optionally) its own CTC head."""

    def __init__(self, vocab_size: int, dim: int, config: dict):
        super().__init__()
        heads, dropout = int(config["emnet_heads"]), float(config["emnet_dropout"])
        self.oracle = OracleEncoder(vocab_size, dim, heads, int(config["emnet_ffn"]), dropout)
        self.fusion = FusionModule(dim, heads, dropout)
        self.ctc_head = nn.Linear(dim, vocab_size) if config["emnet_teacher_own_head"] else None


# ---------------------------------------------------------------- distillation losses

def ctc_posterior_l2(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor,
                     lens: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance of frame posteriors, summed over the vocabulary, mean over valid frames.

    >>> a = torch.log(torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]))
    >>> b = torch.log(torch.tensor([[[0.0, 1.0], [0.5, 0.5]]]))
    >>> ctc_posterior_l2(a, b, torch.tensor([2])).item(), ctc_posterior_l2(a, b, torch.tensor([1])).item()
    (1.0, 2.0)
    """
    valid = ~padding_mask(lens.to(student_log_probs.device), student_log_probs.shape[1])
    diff = (teacher_log_probs.exp() - student_log_probs.exp()).pow(2).sum(-1)
    return diff[valid].mean()


def decoder_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, ys_out: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` of the decoder's token distributions, mean over non-padded tokens."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    return kl[ys_out != IGNORE_INDEX].mean()


# ---------------------------------------------------------------- the model

def teacher_loss_weights(config: dict, ctc_weight: float) -> tuple[float, float]:
    """``(w_ctc, w_att)`` of the teacher's CTC and attention terms (``emnet_teacher_weights``).

    >>> teacher_loss_weights({"emnet_teacher_weights": "student"}, 0.3)
    (0.3, 0.7)
    >>> teacher_loss_weights({"emnet_teacher_weights": "unit"}, 0.3)
    (1.0, 1.0)
    """
    mode = config.get("emnet_teacher_weights", "student")
    if mode not in TEACHER_WEIGHT_MODES:
        raise ValueError(f"emnet_teacher_weights must be one of {TEACHER_WEIGHT_MODES}, got {mode!r}")
    return (float(ctc_weight), 1.0 - float(ctc_weight)) if mode == "student" else (1.0, 1.0)


class EMNetModel(E2EModel):
    """Student (``E2EModel``, unchanged) + teacher modules under ``emnet.``; ``forward`` adds the EM-Network terms.

    The student's terms come from ``E2EModel.forward`` itself; the encoder output, the
    student's CTC log-probs and decoder logits of that call are kept for the distillation
    terms (no second student pass, and the same SpecAugment and dropout draw).
    """

    def __init__(self, config: dict, vocab_size: int):
        super().__init__(config, vocab_size)
        self.config = {**EMNET_DEFAULTS, **self.config, "emnet": True}
        c = self.config
        self.alpha = float(c["emnet_alpha"])
        self.aed = bool(c["emnet_aed"])
        self.mask_prob = float(c["emnet_mask_prob"])
        self.detach_teacher = bool(c["emnet_detach_teacher"])
        self.oracle_on = bool(c["emnet_oracle"])
        self.teacher_ctc_weight, self.teacher_att_weight = teacher_loss_weights(c, self.ctc_weight)
        if self.aed and self.decoder is None:
            raise ValueError("emnet_aed needs the attention decoder (ctc_weight < 1)")
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"emnet_mask_prob must be in [0, 1], got {self.mask_prob}")
        # The control builds no teacher modules: unused parameters would also stall DDP's reducer.
        self.emnet = EMNetTeacher(vocab_size, self.encoder.output_dim, c) if self.oracle_on else None
        self._capture: dict | None = None
        if self.decoder is not None:
            self.decoder.register_forward_hook(self._keep_decoder_logits)
        #: eval mode only: ``(student_log_probs, teacher_log_probs, lens)`` of the last forward
        self.last_ctc_outputs = None
        counts = self.teacher_parameter_counts()
        log.info("EM-Network teacher: %d extra parameters (oracle %d, fusion %d, own head %d); student %d",
                 counts["total"], counts["oracle"], counts["fusion"], counts["head"],
                 sum(p.numel() for k, p in self.named_parameters() if not k.startswith(TEACHER_PREFIX)))

    # -- bookkeeping

    def teacher_parameter_counts(self) -> dict:
        n = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
        parts = (None, None, None) if self.emnet is None else (self.emnet.oracle, self.emnet.fusion, self.emnet.ctc_head)
        counts = {"oracle": n(parts[0]), "fusion": n(parts[1]), "head": n(parts[2])}
        counts["total"] = sum(counts.values())
        return counts

    def export_state_dict(self, state_dict: dict | None = None) -> dict:
        """The student's entries of ``state_dict`` (default: this model's): what decoding loads."""
        sd = self.state_dict() if state_dict is None else state_dict
        return strip_teacher(sd)

    student_state_dict = export_state_dict

    # -- capture of the student's intermediate outputs inside E2EModel.forward

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> EncoderOutput:
        enc = super().encode(feats, feat_lens)
        if self._capture is not None and "enc" not in self._capture:
            self._capture["enc"] = enc
        return enc

    def ctc_log_probs(self, enc_out: torch.Tensor) -> torch.Tensor:
        log_probs = super().ctc_log_probs(enc_out)
        if self._capture is not None and "ctc" not in self._capture:
            self._capture["ctc"] = log_probs
        return log_probs

    def _keep_decoder_logits(self, module, inputs, output):
        if self._capture is not None and "dec" not in self._capture:
            self._capture["dec"] = output

    # -- teacher

    def teacher_fused(self, enc: EncoderOutput, ys: torch.Tensor, ys_lens: torch.Tensor) -> torch.Tensor:
        r, r_pad = self.emnet.oracle(ys, ys_lens)
        return self.emnet.fusion(enc.out, enc.lens, r, r_pad)

    def teacher_ctc_log_probs(self, enc: EncoderOutput, tokens: list[list[int]]) -> torch.Tensor:
        """Teacher CTC log-probs ``(B, T', V)`` given the (unmasked) targets ``tokens``."""
        ys, lens = oracle_targets(tokens, self.sos_id, self.eos_id, self.emnet.oracle.pad_id, enc.out.device)
        fused = self.teacher_fused(enc, ys, lens)
        head = self.emnet.ctc_head if self.emnet.ctc_head is not None else self.ctc_head
        return F.log_softmax(head(fused), dim=-1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        self._capture = {}
        try:
            loss_student, stats = super().forward(batch)
            captured = self._capture
        finally:
            self._capture = None
        enc, student_lp = captured["enc"], captured["ctc"]
        tokens = batch["tokens"]
        stats["loss_student"] = stats["loss"]
        stats["loss_ctc_student"] = stats["loss_ctc"]
        if not self.oracle_on:
            return self._matched_control(loss_student, stats, enc, student_lp, tokens, captured.get("dec"))

        teacher_lp = self.teacher_ctc_log_probs(enc, tokens)
        loss_ctc_teacher = ctc_loss(teacher_lp, enc.lens, tokens, self.blank_id)
        kd_teacher_lp = teacher_lp.detach() if self.detach_teacher else teacher_lp
        loss_kd = loss_kd_ctc = ctc_posterior_l2(kd_teacher_lp, student_lp, enc.lens)
        loss_teacher = self.teacher_ctc_weight * loss_ctc_teacher
        stats["loss_ctc_teacher"] = loss_ctc_teacher.item()
        stats["loss_kd_ctc"] = loss_kd_ctc.item()

        if self.aed:
            loss_att_teacher, acc_teacher, loss_kd_att = self._attention_branch(enc, tokens, captured["dec"])
            loss_teacher = loss_teacher + self.teacher_att_weight * loss_att_teacher
            loss_kd = loss_kd + loss_kd_att
            stats["loss_att_student"] = stats["loss_att"]
            stats["loss_att_teacher"] = loss_att_teacher.item()
            stats["acc_teacher"] = acc_teacher.item()
            stats["loss_kd_att"] = loss_kd_att.item()

        loss = loss_student + loss_teacher + self.alpha * loss_kd
        stats["loss_kd"] = loss_kd.item()
        stats["loss"] = loss.item()
        if not self.training:
            self.last_ctc_outputs = (student_lp.detach(), teacher_lp.detach(), enc.lens.detach())
        return loss, stats

    def _matched_control(self, loss_student, stats: dict, enc: EncoderOutput, student_lp: torch.Tensor,
                         tokens: list[list[int]], student_logits: torch.Tensor | None):
        """The control's loss: the student's CTC (and attention) terms once more, with the teacher weights."""
        loss_ctc = ctc_loss(student_lp, enc.lens, tokens, self.blank_id)
        loss = loss_student + self.teacher_ctc_weight * loss_ctc
        stats["loss_ctc_teacher"] = loss_ctc.item()
        if self.aed:
            _, ys_out, _ = decoder_io(tokens, self.sos_id, self.eos_id, enc.out.device)
            loss_att, _ = attention_loss(student_logits, ys_out, float(self.config["lsm_weight"]))
            loss = loss + self.teacher_att_weight * loss_att
            stats["loss_att_student"] = stats["loss_att"]
            stats["loss_att_teacher"] = loss_att.item()
        stats["loss_kd"] = stats["loss_kd_ctc"] = 0.0
        stats["loss"] = loss.item()
        if not self.training:
            self.last_ctc_outputs = (student_lp.detach(), student_lp.detach(), enc.lens.detach())
        return loss, stats

    def _attention_branch(self, enc: EncoderOutput, tokens: list[list[int]], student_logits: torch.Tensor):
        device = enc.out.device
        ys, lens = oracle_targets(tokens, self.sos_id, self.eos_id, self.emnet.oracle.pad_id, device)
        # Dev losses use the same mask draw every epoch, so they compare across epochs.
        generator = None if self.training else torch.Generator().manual_seed(0)
        ys = mask_oracle_tokens(ys, lens, self.mask_prob, self.emnet.oracle.mask_id, generator)
        fused = self.teacher_fused(enc, ys, lens)
        ys_in, ys_out, ys_in_lens = decoder_io(tokens, self.sos_id, self.eos_id, device)
        teacher_logits = self.decoder(ys_in, ys_in_lens, fused, enc.lens)
        loss_att, acc = attention_loss(teacher_logits, ys_out, float(self.config["lsm_weight"]))
        kd_logits = teacher_logits.detach() if self.detach_teacher else teacher_logits
        return loss_att, acc, decoder_kl(kd_logits, student_logits, ys_out)

    # -- the trainer's interface (see E2EModel)

    @torch.no_grad()
    def validate(self, loader, tokenizer) -> dict:
        """Dev losses per term plus greedy-CTC WER/CER of the student (``wer``, ``wer_student``) and teacher."""
        self.eval()
        mean = StatsMean()
        errors = {"student": GreedyErrors(), "teacher": GreedyErrors()}
        for batch in loader:
            _, stats = self(batch)
            mean.add(stats, len(batch["cut_ids"]))
            student_lp, teacher_lp, lens = self.last_ctc_outputs
            for who, lp in (("student", student_lp), ("teacher", teacher_lp)):
                errors[who].add(batch["texts"], [tokenizer.decode(t) for t in greedy_ctc(lp, lens)])
        self.last_ctc_outputs = None
        self.train()
        result = mean.result()
        for who, counts in errors.items():
            for key, value in counts.rates().items():
                result[f"{key}_{who}"] = value
        result["wer"], result["cer"] = result["wer_student"], result["cer_student"]
        log.info("EM-Network dev: CTC loss student %.3f / teacher %.3f, KD %.4f; greedy-CTC WER student %.1f%% / "
                 "teacher %.1f%%", result.get("loss_ctc_student", float("nan")),
                 result.get("loss_ctc_teacher", float("nan")), result.get("loss_kd", float("nan")),
                 result["wer_student"], result["wer_teacher"])
        return result

    def plot_extras(self, metrics: list[dict], run_dir: str | Path, title: str = "") -> None:
        """``emnet_curves.png``: teacher vs student losses and dev WER per epoch."""
        plot_teacher_student_curves(metrics, Path(run_dir) / "emnet_curves.png", title=title)


# ---------------------------------------------------------------- loading a run

def load_teacher_student(run_dir: str | Path, device="cpu") -> tuple[EMNetModel, dict, list[int]]:
    """The full EM-Network of a run (student + teacher), eval mode: the mean of the checkpoints
    averaged into ``model_avg.pt`` (so its student equals the decoding model), else the latest one.
    """
    run_dir = Path(run_dir)
    ckpt_dir = checkpoint_dir(run_dir)
    avg_path = run_dir / "model_avg.pt"
    epochs: list[int] = []
    if avg_path.exists():
        epochs = list(torch.load(avg_path, map_location="cpu", weights_only=False).get("averaged_epochs", []))
    paths = [ckpt_dir / f"epoch-{e}.pt" for e in epochs]
    if not paths or not all(p.exists() for p in paths):
        last = latest_checkpoint(run_dir)
        if last is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoints/epoch-N.pt with the teacher's weights")
        paths, epochs = [last], [int(last.stem.split("-")[1])]
    first = torch.load(paths[0], map_location="cpu", weights_only=False)
    config = first["config"]
    if not is_emnet_config(config):
        raise ValueError(f"{run_dir} is not an EM-Network run (its config has no `emnet: true`)")
    model = EMNetModel(config, first["vocab_size"])
    model.load_state_dict(average_state_dicts(paths) if len(paths) > 1 else first["model"])
    return model.to(device).eval(), config, epochs
