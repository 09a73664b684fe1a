"""Frame-level alignment targets for E2E trainers: subsampling to the encoder rate and collation.

Needs only lhotse, torch and numpy (the ``weakalign[loader]`` extra: with lilcom and urllib3,
which lhotse imports; no Kaldi package), so any PyTorch project can use the exported
``senone``/``phone`` TemporalArrays: :func:`collate_labels` pads them with the loss's ignore
index -100 (lhotse pads with 0, a real senone; :data:`LABEL_PAD_VALUES` for ``cut.pad``),
:func:`perturb_speed_with_labels` speed-perturbs a cut with its labels stretched along, and
:func:`load_global_cmvn` reads the fbank normalisation the E2E model applies.

The E2E encoder subsamples the 10 ms fbank frames ×4 with two Conv2d layers
(kernel 3, stride 2, no padding). Output frame ``j`` of the second conv sees
outputs ``2j .. 2j+2`` of the first, which see input frames ``4j .. 4j+6``: a
7-frame window whose centre is input frame ``4j + 3``. Three ways to give that
output frame a target (the E2E config key ``aux_targets``):

- ``centre``: the 10 ms label at the centre frame (:func:`subsample_labels`); a senone
  run shorter than 4 frames can fall between two centres and never be seen;
- ``majority``: the most frequent label of the window (``subsample_labels(..., mode="majority")``);
- ``soft``: the window's label histogram (:func:`window_label_distribution`), which keeps
  every run that overlaps a window, with weight (frames in the window) / 7.

>>> subsampled_length(100)
24
>>> subsample_labels(np.arange(12))          # centre frames 3 and 7
array([3, 7])
>>> row = np.array([0, 0, 0, 1, 0, 2, 2, 2, 2, 2, 2])   # an 11-frame row: windows 0..6 and 4..10
>>> subsample_labels(row), subsample_labels(row, mode="majority")
(array([1, 2]), array([0, 2]))
>>> dist, valid = window_label_distribution(row, num_classes=3)
>>> (dist * 7).round().tolist()           # frames per label in each window
[[4.0, 1.0, 2.0], [1.0, 0.0, 6.0]]
>>> padded, lens = collate_alignments([np.array([1, 2, 3]), np.array([4])])
>>> padded.tolist(), lens.tolist()
([[1, 2, 3], [4, -100, -100]], [3, 1])
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

IGNORE_INDEX = -100
#: The frame-label arrays the export writes (``cut.load_senone()``, ``cut.load_phone()``).
LABEL_FIELDS = ("senone", "phone")
#: ``cut.pad(..., pad_value_dict=LABEL_PAD_VALUES)``: pad label arrays with the ignore index, not 0.
LABEL_PAD_VALUES = {name: IGNORE_INDEX for name in LABEL_FIELDS}
#: ``cut.custom`` key: the time factor :func:`perturb_speed_with_labels` stretched the labels by.
STRETCHED_BY = "labels_time_factor"

# Two convs with kernel 3 and stride 2: output frame j covers input frames
# [SUBSAMPLING * j, SUBSAMPLING * j + WINDOW - 1].
SUBSAMPLING = 4
WINDOW = 7
CENTRE_OFFSET = WINDOW // 2
SUBSAMPLE_MODES = ("centre", "majority")


def subsampled_length(num_frames: int) -> int:
    """Encoder output frames for ``num_frames`` input frames: ``((T - 1) // 2 - 1) // 2``, at least 0.

    >>> [subsampled_length(t) for t in (6, 7, 10, 11)]
    [0, 1, 1, 2]
    """
    return max(((int(num_frames) - 1) // 2 - 1) // 2, 0)


def subsampled_lengths(num_frames: torch.Tensor) -> torch.Tensor:
    """Tensor version of :func:`subsampled_length` (element-wise, same dtype and device).

    >>> subsampled_lengths(torch.tensor([6, 7, 100])).tolist()
    [0, 1, 24]
    """
    return torch.clamp(torch.div(torch.div(num_frames - 1, 2, rounding_mode="floor") - 1, 2,
                                 rounding_mode="floor"), min=0)


def window_centres(num_frames: int) -> np.ndarray:
    """Input-frame index of the centre of each output frame's receptive window.

    >>> window_centres(15).tolist()
    [3, 7, 11]
    """
    return np.arange(subsampled_length(num_frames)) * SUBSAMPLING + CENTRE_OFFSET


def subsample_labels(labels, lengths=None, pad: int = IGNORE_INDEX, mode: str = "centre"):
    """Map 10 ms labels to the encoder's 40 ms rate: one label per 7-frame receptive window.

    ``mode="centre"`` takes the label at each window's centre frame ``4j + 3``;
    ``mode="majority"`` the most frequent label among the window's valid (not ``pad``)
    frames ``4j .. 4j+6``, ties going to the centre frame's label if it is among the
    tied, else to the tied label that occurs first in the window (``pad`` if no frame
    of the window is valid).

    ``labels`` is a 1-D array/tensor ``(T,)`` or a padded batch ``(B, T)``; numpy in,
    numpy out. For a batch, ``lengths`` gives each row's valid frames (default: the count
    of entries that are not ``pad``); output frames past a row's subsampled length
    are set to ``pad``, so padded frames stay ignored by the loss.

    >>> subsample_labels(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ...                                [0, 1, 2, 3, 4, 5, 6, -100, -100, -100, -100]])).tolist()
    [[3, 7], [3, -100]]

    Majority ties: window 0 of the first row (frames 0..6: 9 9 8 5 5 6 6) ties 9, 5
    and 6 at two frames each and the centre's 5 wins; window 1 (frames 4..10:
    5 6 6 7 5 1 1) ties 5, 6 and 1 with 7 at the centre, so the 5 that comes first
    wins. The second row has 7 valid frames, so one output frame.

    >>> rows = torch.tensor([[9, 9, 8, 5, 5, 6, 6, 7, 5, 1, 1],
    ...                      [4, 4, 4, 5, 5, 6, 6, -100, -100, -100, -100]])
    >>> subsample_labels(rows).tolist(), subsample_labels(rows, mode="majority").tolist()
    ([[5, 7], [5, -100]], [[5, 5], [4, -100]])
    """
    if mode not in SUBSAMPLE_MODES:
        raise ValueError(f"mode must be one of {SUBSAMPLE_MODES}, got {mode!r}")
    is_numpy = isinstance(labels, np.ndarray)
    x = torch.as_tensor(labels)
    if x.dim() not in (1, 2):
        raise ValueError(f"labels must be (T,) or (B, T), got shape {tuple(x.shape)}")
    if mode == "centre":
        out = _centre_labels(x, lengths, pad)
    else:
        windows, valid = _label_windows(x, lengths, pad)
        out = _majority_labels(windows, valid, pad)
        out = out[0] if x.dim() == 1 else out
    return out.numpy() if is_numpy else out


def _centre_labels(x: torch.Tensor, lengths, pad: int) -> torch.Tensor:
    if x.dim() == 1:
        return x[CENTRE_OFFSET::SUBSAMPLING][: subsampled_length(x.shape[0])]
    out_len = subsampled_length(x.shape[1])
    out = x[:, CENTRE_OFFSET::SUBSAMPLING][:, :out_len].clone()
    out[~_frame_mask(x, lengths, pad, out_len)] = pad
    return out


def _frame_mask(x: torch.Tensor, lengths, pad: int, out_len: int) -> torch.Tensor:
    """``(B, T')``: output frames within each row's subsampled length (rows of a 2-D ``x``)."""
    if lengths is None:
        lengths = (x != pad).sum(dim=1)
    lengths = torch.as_tensor(lengths, device=x.device)
    return torch.arange(out_len, device=x.device)[None, :] < subsampled_lengths(lengths)[:, None]


def _label_windows(x: torch.Tensor, lengths, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each output frame's 7 input labels ``(B, T', 7)`` and which of them count.

    A 1-D ``x`` is a batch of one whose length is all of it. An input frame counts when
    its label is not ``pad`` and its output frame is within the row's subsampled length;
    such an output frame's whole window lies inside the row (4j + 6 < length), so no
    per-input-frame length test is needed.
    """
    if x.dim() == 1:
        x, lengths = x[None], torch.tensor([x.shape[0]], device=x.device)
    out_len = subsampled_length(x.shape[1])
    if out_len == 0:        # unfold needs at least one whole window
        windows = x.new_full((x.shape[0], 0, WINDOW), pad)
    else:
        windows = x.unfold(1, WINDOW, SUBSAMPLING)[:, :out_len]
    valid = (windows != pad) & _frame_mask(x, lengths, pad, out_len)[:, :, None]
    return windows, valid


# Tie-break bonus per window position, below one count step (16 > 8): the centre beats every
# other position, then earlier beats later (position 0 gets 7, position 6 gets 1).
_TIE_BONUS = torch.tensor([WINDOW - i for i in range(WINDOW)])
_TIE_BONUS[CENTRE_OFFSET] = WINDOW + 1
_COUNT_STEP = 2 * (WINDOW + 1)


def _majority_labels(windows: torch.Tensor, valid: torch.Tensor, pad: int) -> torch.Tensor:
    """The most frequent valid label per window ``(B, T')``, ties by :data:`_TIE_BONUS`; ``pad`` if none.

    Compares the 7 positions pairwise (7x7 per window) instead of building a K-class histogram.
    """
    same = (windows[..., :, None] == windows[..., None, :]) & valid[..., None, :]
    counts = same.sum(-1)                                    # (B, T', 7): frames sharing this label
    score = counts * _COUNT_STEP + _TIE_BONUS.to(windows.device)
    score = score.masked_fill(~valid, -1)
    best = score.argmax(-1, keepdim=True)
    out = windows.gather(-1, best).squeeze(-1).clone()
    out[~valid.any(-1)] = pad
    return out


def window_label_distribution(labels, lengths=None, num_classes: int | None = None,
                              pad: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft 40 ms targets: the normalised histogram of each receptive window's valid labels.

    ``labels``/``lengths``/``pad`` as in :func:`subsample_labels`. Returns ``(dist, valid)``:
    ``dist`` float32 ``(B, T', num_classes)`` (``(T', K)`` for 1-D labels) sums to 1 over
    the classes on every valid output frame and is all zero elsewhere; ``valid`` ``(B, T')``
    bool marks output frames within the row's subsampled length that have at least one
    non-pad label — the same frames where ``subsample_labels(..., mode="majority")`` is not ``pad``.
    A label outside ``0 .. num_classes-1`` raises ``ValueError``.

    A 2-frame run (label 1) falls between the centres 3 and 7, but both windows see it:

    >>> dist, valid = window_label_distribution(torch.tensor([[0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, -100]]),
    ...                                         num_classes=3)
    >>> (dist[0] * 7).round().tolist(), valid.tolist()
    ([[5.0, 2.0, 0.0], [1.0, 2.0, 4.0]], [[True, True]])
    """
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    x = torch.as_tensor(labels)
    if x.dim() not in (1, 2):
        raise ValueError(f"labels must be (T,) or (B, T), got shape {tuple(x.shape)}")
    windows, valid_in = _label_windows(x.long(), lengths, pad)
    out_of_range = valid_in & ((windows < 0) | (windows >= num_classes))
    if bool(out_of_range.any()):
        raise ValueError(f"labels outside 0..{num_classes - 1}: {sorted(set(windows[out_of_range].tolist()))[:5]}")
    weights = valid_in.float()
    # Invalid positions add weight 0, so any in-range index will do for them.
    index = windows.masked_fill(~valid_in, 0)
    hist = weights.new_zeros(*windows.shape[:2], int(num_classes)).scatter_add_(-1, index, weights)
    dist = hist / weights.sum(-1, keepdim=True).clamp(min=1.0)
    valid = valid_in.any(-1)
    return (dist[0], valid[0]) if x.dim() == 1 else (dist, valid)


def _integer_labels(a, what: str) -> np.ndarray:
    """``a`` as int64 if it is 1-D and integral (lilcom-stored arrays come back as float32)."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        rounded = np.rint(a)
        if not np.array_equal(rounded, a):
            raise ValueError(f"{what} holds non-integer labels")
        a = rounded
    return a.astype(np.int64)


def collate_alignments(alignments: Sequence, pad: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D integer label arrays into a ``(B, T_max)`` LongTensor; also return the lengths."""
    lengths = torch.tensor([len(a) for a in alignments], dtype=torch.long)
    padded = torch.full((len(alignments), int(lengths.max()) if len(alignments) else 0), pad, dtype=torch.long)
    for i, a in enumerate(alignments):
        padded[i, : len(a)] = torch.as_tensor(_integer_labels(a, f"alignment {i}"))
    return padded, lengths


def cut_list_digest(cuts) -> str:
    """Content hash of which utterances ``cuts`` holds (their sorted ids): two runs trained on the
    same cut list share it, whatever labels the cuts carry."""
    return hashlib.sha1("\n".join(sorted(c.id for c in cuts)).encode()).hexdigest()


def alignment_digest(cuts) -> str | None:
    """Content hash of the senone labels of ``cuts`` (ids and arrays, order-free); ``None`` when
    no cut carries them. Two runs trained on the same alignment set share it."""
    labelled = sorted((c for c in cuts if c.has_custom("senone")), key=lambda c: c.id)
    if not labelled:
        return None
    h = hashlib.sha1()
    for cut in labelled:
        h.update(cut.id.encode())
        h.update(load_cut_labels(cut, "senone").tobytes())
    return h.hexdigest()


def load_cut_labels(cut, field: str = "senone") -> np.ndarray:
    """A cut's custom ``field`` TemporalArray as int64 (one label per frame of the cut).

    lilcom-stored arrays come back as float32; the values are checked to be integral. A cut
    whose audio was sped up or slowed down (lhotse ``perturb_speed``/``perturb_tempo``) without
    :func:`perturb_speed_with_labels` is refused: lhotse would return the unstretched labels
    cut to the new duration, which no longer match the audio.
    """
    speed, stretched = audio_time_factor(cut), (cut.custom or {}).get(STRETCHED_BY, 1.0)
    if not np.isclose(speed, stretched):
        raise ValueError(f"{cut.id}: the audio is time-scaled by {speed:g} but the {field} labels by {stretched:g}; "
                         "speed-perturb with weakalign.align.loader.perturb_speed_with_labels, "
                         "which stretches the labels with the audio")
    return _integer_labels(cut.load_custom(field), f"{cut.id}: {field}")


def collate_labels(cuts: Sequence, field: str = "senone", pad: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``field`` labels of ``cuts`` as a ``(B, T_max)`` LongTensor padded with ``pad``, and their lengths.

    lhotse pads custom arrays with 0 (``collate_custom_field``, ``cut.pad``), which is a real
    senone; here padding is the loss's ignore index. (With lhotse's own functions pass
    ``collate_custom_field(cuts, "senone", pad_value=IGNORE_INDEX)`` or
    ``cut.pad(..., pad_value_dict=LABEL_PAD_VALUES)``.)
    """
    return collate_alignments([load_cut_labels(c, field) for c in cuts], pad=pad)


def stretch_labels(labels: np.ndarray, num_frames: int, factor: float) -> np.ndarray:
    """Frame labels of an utterance played ``factor`` times faster, ``num_frames`` long.

    Frame ``i`` of the perturbed audio starts at ``i * factor`` frames of the original, so it takes
    the label there (nearest frame, clipped to the last). Speed perturbation scales time
    uniformly, so this is the original alignment up to a frame; Kaldi realigns the perturbed copies
    with the GMM instead, which the tri1 MFCC models here would need a feature pass per copy for.

    >>> stretch_labels(np.array([1, 1, 2, 2, 3, 3]), 7, 6 / 7).tolist()   # slower: longer, same order
    [1, 1, 2, 2, 2, 3, 3]
    >>> stretch_labels(np.array([1, 1, 2, 2, 3, 3]), 4, 1.5).tolist()     # faster: frames skipped
    [1, 2, 2, 3]
    """
    idx = np.minimum(np.rint(np.arange(num_frames) * factor).astype(np.int64), len(labels) - 1)
    return np.asarray(labels)[idx]


def audio_time_factor(cut) -> float:
    """How many times faster the cut's audio plays than its source: the product of the
    ``Speed``/``Tempo`` factors of its recording's transforms (1.0 for none)."""
    factor = 1.0
    recording = getattr(cut, "recording", None)
    for t in (recording.transforms or []) if recording is not None else []:
        name, kwargs = (t["name"], t["kwargs"]) if isinstance(t, dict) else (type(t).__name__, vars(t))
        if name in ("Speed", "Tempo"):
            factor *= float(kwargs["factor"])
    return factor


def perturb_speed_with_labels(cut, factor: float, fields: Sequence[str] = LABEL_FIELDS):
    """``cut.perturb_speed(factor)`` with its label arrays (``fields`` it has) stretched to the new
    frames by :func:`stretch_labels`, as the hybrid stage labels its speed-perturbed copies.

    The result has no features (lhotse cannot speed-perturb them: compute fbank from
    ``cut.load_audio()``) and holds the labels in memory (it cannot be saved to a manifest).
    """
    from lhotse.cut.data import DataCut
    from lhotse.utils import compute_num_frames

    if not isinstance(cut, DataCut) or not cut.has_recording:
        raise ValueError(f"{cut.id}: speed perturbation needs a single cut with a recording, "
                         f"got a {type(cut).__name__}{'' if getattr(cut, 'has_recording', False) else ' without audio'}")
    labels = {f: (load_cut_labels(cut, f), cut.custom[f].frame_shift) for f in fields if cut.has_custom(f)}
    # drop_features first: lhotse's perturb_speed detaches the features of the cut it is given.
    fast = cut.drop_features().perturb_speed(factor)
    for name, (values, frame_shift) in labels.items():
        num_frames = compute_num_frames(fast.duration, frame_shift, fast.sampling_rate)
        fast = fast.attach_tensor(name, stretch_labels(values, num_frames, factor).astype(np.int32),
                                  frame_shift=frame_shift, temporal_dim=0)
    return fast.with_custom(STRETCHED_BY, audio_time_factor(fast))


def load_global_cmvn(path) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 of ``data/<c>/fbank/global_cmvn.json`` (written by the features stage
    from the train fbank); normalise fbank as ``(feats - mean) / std``, as the E2E model does.
    ``std`` is floored at 1e-5 so a constant bin cannot divide by zero.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "global_cmvn.json"
    >>> _ = path.write_text('{"mean": [10.0, 12.0], "std": [2.0, 0.0], "frames": 100}')
    >>> mean, std = load_global_cmvn(path)
    >>> ((np.array([[12.0, 12.0]]) - mean) / std).tolist()
    [[1.0, 0.0]]
    """
    stats = json.loads(Path(path).read_text())
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.maximum(np.asarray(stats["std"], dtype=np.float32), np.float32(1e-5))
    if mean.shape != std.shape or mean.ndim != 1:
        raise ValueError(f"{path}: mean and std must be vectors of one length, got {mean.shape} and {std.shape}")
    return mean, std
