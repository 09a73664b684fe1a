"""How a GMM stage turns a cut's MFCCs into its model's features.

Two kinds, as Kaldi's recipes feed them to the GMM binaries:

* ``deltas`` (``train_mono.sh``, ``train_deltas.sh``): MFCC + per-speaker CMVN + Δ+ΔΔ (39 dims);
* ``splice`` (``train_lda_mllt.sh``): MFCC + per-speaker CMVN, spliced ±``context`` frames
  (``splice-feats``, 13 x 7 = 91 dims), then multiplied by ``transform`` (``transform-feats``
  with ``lda.mat`` / ``final.mat``) when one is given.

A :class:`FeatureSpec` travels to the worker processes (it pickles), so the same spec gives the
same features to training, alignment and the WER check.

>>> import numpy as np
>>> splice_frames(np.array([[1.0], [2.0], [3.0]]), 1).tolist()
[[1.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 3.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ``train_lda_mllt.sh``'s default ``splice_opts``: ``--left-context=3 --right-context=3``.
DEFAULT_SPLICE_CONTEXT = 3


def splice_frames(feats: np.ndarray, context: int = DEFAULT_SPLICE_CONTEXT) -> np.ndarray:
    """Kaldi ``splice-feats``: each frame with ``context`` frames either side, concatenated from
    the leftmost, the edge frames repeated (T x D -> T x D(2 context + 1))."""
    feats = np.asarray(feats)
    num_frames = len(feats)
    offsets = np.arange(-context, context + 1)
    index = np.clip(np.arange(num_frames)[:, None] + offsets[None, :], 0, max(num_frames - 1, 0))
    return feats[index].reshape(num_frames, -1)


def apply_transform(feats: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Kaldi ``transform-feats``: ``feats @ transform.T``; a transform with one extra column
    holds an offset (``est-lda --remove-offset``), applied as a constant 1 feature."""
    transform = np.asarray(transform, dtype=np.float64)
    feats = np.asarray(feats, dtype=np.float64)
    if transform.shape[1] == feats.shape[1] + 1:
        return feats @ transform[:, :-1].T + transform[:, -1]
    if transform.shape[1] != feats.shape[1]:
        raise ValueError(f"transform of {transform.shape[1]} columns for features of dimension {feats.shape[1]}")
    return feats @ transform.T


@dataclass
class FeatureSpec:
    """What a :class:`~weakalign.kaldi_steps.shard.Shard` computes from the normalised MFCCs."""

    kind: str = "deltas"  # "deltas" or "splice"
    context: int = DEFAULT_SPLICE_CONTEXT
    transform: np.ndarray | None = None  # for "splice": applied after splicing when given

    def __post_init__(self):
        if self.kind not in ("deltas", "splice"):
            raise ValueError(f"unknown feature kind {self.kind!r}: deltas or splice")
        if self.kind == "deltas" and self.transform is not None:
            raise ValueError("a feature transform goes with spliced features")

    @classmethod
    def lda(cls, transform: np.ndarray | None = None, context: int = DEFAULT_SPLICE_CONTEXT) -> "FeatureSpec":
        """Spliced features, transformed by ``transform`` (LDA, LDA+MLLT) when given."""
        return cls("splice", context, None if transform is None else np.asarray(transform, dtype=np.float32))

    def base(self, mfcc: np.ndarray) -> np.ndarray:
        """The features before any transform: Δ+ΔΔ, or the spliced frames."""
        from weakalign.pipeline.acoustic_features import add_deltas

        if self.kind == "deltas":
            return add_deltas(mfcc)
        return splice_frames(mfcc, self.context)

    def base_dim(self, mfcc_dim: int = 13) -> int:
        """The dimension of :meth:`base` for ``mfcc_dim``-dimensional MFCCs."""
        return mfcc_dim * (3 if self.kind == "deltas" else 2 * self.context + 1)

    def transformed(self, base: np.ndarray, transform: np.ndarray | None = None) -> np.ndarray:
        """``base`` through ``transform`` (default: this spec's), float32 as the GMM code wants."""
        transform = self.transform if transform is None else transform
        feats = base if transform is None else apply_transform(base, transform)
        return np.ascontiguousarray(feats, dtype=np.float32)
