"""Frame-level alignment targets for E2E trainers: subsampling to the encoder rate and collation.

Needs only lhotse, torch and numpy (no ``kaldi_hmm_gmm``), so any PyTorch
project can use the exported ``senone``/``phone`` TemporalArrays.

The E2E encoder subsamples the 10 ms fbank frames ×4 with two Conv2d layers
(kernel 3, stride 2, no padding). Output frame ``j`` of the second conv sees
outputs ``2j .. 2j+2`` of the first, which see input frames ``4j .. 4j+6``: a
7-frame window whose centre is input frame ``4j + 3``. A 40 ms label is the
10 ms label at that centre frame.

>>> subsampled_length(100)
24
>>> subsample_labels(np.arange(12))          # centre frames 3 and 7
array([3, 7])
>>> padded, lens = collate_alignments([np.array([1, 2, 3]), np.array([4])])
>>> padded.tolist(), lens.tolist()
([[1, 2, 3], [4, -100, -100]], [3, 1])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

IGNORE_INDEX = -100

# Two convs with kernel 3 and stride 2: output frame j covers input frames
# [SUBSAMPLING * j, SUBSAMPLING * j + WINDOW - 1].
SUBSAMPLING = 4
WINDOW = 7
CENTRE_OFFSET = WINDOW // 2


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


def subsample_labels(labels, lengths=None, pad: int = IGNORE_INDEX):
    """Map 10 ms labels to the encoder's 40 ms rate: the label at each window's centre frame.

    ``labels`` is a 1-D array/tensor ``(T,)`` or a padded batch ``(B, T)``. For a
    batch, ``lengths`` gives each row's valid frames (default: the count of
    entries that are not ``pad``); output frames past a row's subsampled length
    are set to ``pad``, so padded frames stay ignored by the loss.

    >>> subsample_labels(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ...                                [0, 1, 2, 3, 4, 5, 6, -100, -100, -100, -100]])).tolist()
    [[3, 7], [3, -100]]
    """
    is_numpy = isinstance(labels, np.ndarray)
    x = torch.as_tensor(labels)
    if x.dim() == 1:
        out = x[CENTRE_OFFSET::SUBSAMPLING][: subsampled_length(x.shape[0])]
        return out.numpy() if is_numpy else out
    if x.dim() != 2:
        raise ValueError(f"labels must be (T,) or (B, T), got shape {tuple(x.shape)}")
    if lengths is None:
        lengths = (x != pad).sum(dim=1)
    lengths = torch.as_tensor(lengths, device=x.device)
    out_len = subsampled_length(x.shape[1])
    out = x[:, CENTRE_OFFSET::SUBSAMPLING][:, :out_len].clone()
    valid = torch.arange(out_len, device=x.device)[None, :] < subsampled_lengths(lengths)[:, None]
    out[~valid] = pad
    return out.numpy() if is_numpy else out


def collate_alignments(alignments: Sequence, pad: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D integer label arrays into a ``(B, T_max)`` LongTensor; also return the lengths."""
    lengths = torch.tensor([len(a) for a in alignments], dtype=torch.long)
    padded = torch.full((len(alignments), int(lengths.max()) if len(alignments) else 0), pad, dtype=torch.long)
    for i, a in enumerate(alignments):
        a = np.asarray(a)
        if a.ndim != 1:
            raise ValueError(f"alignment {i} must be 1-D, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            rounded = np.rint(a)
            if not np.array_equal(rounded, a):
                raise ValueError(f"alignment {i} holds non-integer labels")
            a = rounded
        padded[i, : len(a)] = torch.as_tensor(a.astype(np.int64))
    return padded, lengths


def load_cut_labels(cut, field: str = "senone") -> np.ndarray:
    """A cut's custom ``field`` TemporalArray as int64, exactly ``cut.num_frames`` long.

    lilcom-stored arrays come back as float32; the values are checked to be integral.
    """
    arr = np.asarray(cut.load_custom(field))
    if arr.ndim != 1:
        raise ValueError(f"{cut.id}: {field} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise ValueError(f"{cut.id}: {field} holds non-integer values")
        arr = rounded
    return arr.astype(np.int64)
