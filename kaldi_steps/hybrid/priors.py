"""Pdf priors for a hybrid model: the class frequencies of the training alignments.

A hybrid NN estimates posteriors ``p(pdf | x)``; HMM decoding needs likelihoods,
so the decoder uses ``log p(pdf | x) - log p(pdf)`` (Bayes' rule up to a constant),
as Kaldi's ``nnet-am-copy --set-priors`` / ``nnet3-am-adjust-priors`` do. The prior
``p(pdf)`` is estimated from the pdf counts of the alignments the NN was trained on:
add-one smoothed (a pdf never seen still gets a finite prior), floored (a rare pdf
would otherwise get a huge likelihood boost), then renormalised to sum to one.

>>> import numpy as np
>>> p = priors_from_counts(np.array([0, 98, 1, 1]), floor=0.05)
>>> round(float(p.sum()), 6), bool(p.min() >= 0.05 / 1.2)
(1.0, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from weakalign.pipeline.io import atomic_path


def pdf_counts(pdf_alignments: Iterable[np.ndarray], num_pdfs: int) -> np.ndarray:
    """How many frames each pdf-id occupies in ``pdf_alignments`` (int64, length ``num_pdfs``).

    >>> pdf_counts([np.array([0, 0, 2]), np.array([2])], 4).tolist()
    [2, 0, 2, 0]
    """
    counts = np.zeros(num_pdfs, dtype=np.int64)
    for pdfs in pdf_alignments:
        pdfs = np.asarray(pdfs)
        if pdfs.size and (pdfs.min() < 0 or pdfs.max() >= num_pdfs):
            raise ValueError(f"pdf-id out of range [0, {num_pdfs}): {pdfs.min()}..{pdfs.max()}")
        counts += np.bincount(pdfs, minlength=num_pdfs)
    return counts


def priors_from_counts(counts: np.ndarray, floor: float = 1e-5) -> np.ndarray:
    """Add-one smoothed, floored and renormalised priors (float64, sums to one).

    The floor is applied before the final renormalisation, so after it a prior can sit
    slightly below ``floor`` (by the renormalisation factor, at most ``1 + n * floor``).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty vector, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    if not 0 <= floor < 1.0 / counts.size:
        raise ValueError(f"floor {floor} must be in [0, 1/num_pdfs = {1.0 / counts.size:g})")
    smoothed = (counts + 1.0) / (counts.sum() + counts.size)
    floored = np.maximum(smoothed, floor)
    return floored / floored.sum()


def save_priors(out_dir: str | os.PathLike, priors: np.ndarray, counts: np.ndarray) -> tuple[Path, Path]:
    """Write ``priors.npy`` and ``pdf_counts.npy`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = out_dir / "priors.npy", out_dir / "pdf_counts.npy"
    for path, array in zip(paths, (priors, counts)):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
    return paths


def load_priors(out_dir: str | os.PathLike) -> np.ndarray:
    return np.load(Path(out_dir) / "priors.npy")
