"""LDA and MLLT (semi-tied covariance) estimation, as Kaldi's ``acc-lda``/``est-lda`` and
``gmm-acc-mllt``/``est-mllt``/``gmm-transform-means`` (``src/transform/lda-estimate.cc``,
``mllt.cc``), in numpy.

**LDA.** Classes are the pdfs of the previous system's alignments (``ali-to-post | acc-lda``),
silence phones weighted 0 (``weight-silence-post 0.0``). From the per-class counts and sums and
the total scatter: total covariance T, between-class covariance B, within-class W = T - B.
With W = L Lᵀ (Cholesky; a little diagonal smoothing if W is not positive definite), the
eigenvectors U of L⁻¹ B L⁻ᵀ sorted by decreasing eigenvalue give the full matrix Uᵀ L⁻¹: its
output has unit within-class covariance and between-class covariance diag(eigenvalues), and
``est-lda --dim`` keeps its first rows. Kaldi's ``--rand-prune`` (random subsampling of frames
for speed) is not done: the statistics here are exact and deterministic.

**MLLT.** Per Gaussian m with inverse variances σ⁻²ₘ and frame posteriors γₜₘ within the
frame's aligned pdf, ``G_j = Σₜₘ γₜₘ σ⁻²ₘⱼ (μₘ - xₜ)(μₘ - xₜ)ᵀ`` and ``β = Σₜₘ γₜₘ``. The square
transform A maximises the auxiliary function ``β log|det A| - ½ Σⱼ aⱼᵀ G_j aⱼ`` (Gales 1999,
"Semi-tied covariance matrices"), row by row: ``aⱼ = G_j⁻¹ cⱼ √(β / cⱼᵀ G_j⁻¹ cⱼ)`` with cⱼ the
j-th row of A⁻ᵀ, 200 passes from the identity. The model's means become A μ (the variances stay,
now diagonal in the rotated space) and the feature transform A · (previous transform).

>>> import numpy as np
>>> stats = LdaStats.zeros(2, 1)
>>> stats.add_frames(np.array([[0.0], [2.0], [10.0], [12.0]]), np.array([0, 0, 1, 1]))
>>> lda, _ = estimate_lda(stats, 1)
>>> float(abs(lda.matrix[0, 0]))  # within-class std is 1: the scale that makes it unit
1.0
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .diag_gmm import gmm_from_arrays, pdf_posteriors

log = logging.getLogger("weakalign")

#: ``train_lda_mllt.sh``: ``--dim=40``, MLLT on iterations 2 4 6 12 of 35.
DEFAULT_LDA_DIM = 40
DEFAULT_MLLT_ITERS = (2, 4, 6, 12)
MLLT_PASSES = 200  # est-mllt's fixed number of row-by-row passes


def _sum_stats(parts):
    """A new accumulator holding the sum of ``parts`` (in order; the parts are left as they are)."""
    import copy

    parts = list(parts)
    total = copy.deepcopy(parts[0])
    for part in parts[1:]:
        total.add(part)
    return total


# ---------------------------------------------------------------------------------------------
# LDA


@dataclass
class LdaStats:
    """``acc-lda``'s accumulators: per-class count (C,) and sum (C, D), total scatter Σ x xᵀ (D, D)."""

    count: np.ndarray
    first: np.ndarray
    scatter: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int, dim: int) -> "LdaStats":
        return cls(np.zeros(num_classes), np.zeros((num_classes, dim)), np.zeros((dim, dim)))

    def add_frames(self, feats: np.ndarray, classes: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add frames ``feats`` (T x D) of classes ``classes`` (T,), each with its weight (default 1)."""
        x = np.asarray(feats, dtype=np.float64)
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.count += np.bincount(classes, weights=w, minlength=len(self.count))
        np.add.at(self.first, classes, x * w[:, None])
        self.scatter += (x * w[:, None]).T @ x

    def add(self, other: "LdaStats") -> None:
        self.count += other.count
        self.first += other.first
        self.scatter += other.scatter

    @classmethod
    def merge(cls, parts) -> "LdaStats":
        """The sum of the jobs' statistics."""
        return _sum_stats(parts)

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(total covariance, between-class covariance, global mean), as ``LdaEstimate::GetStats``."""
        total = self.count.sum()
        if total <= 0:
            raise ValueError("no LDA statistics: every frame had weight 0 (all silence?)")
        mean = self.first.sum(0) / total
        total_cov = self.scatter / total - np.outer(mean, mean)
        seen = self.count > 0
        class_means = self.first[seen] / self.count[seen, None]
        between = (class_means * (self.count[seen, None] / total)).T @ class_means - np.outer(mean, mean)
        return total_cov, between, mean


@dataclass
class Lda:
    """An estimated LDA: ``matrix`` (dim x D, ``lda.mat``), ``full`` (D x D, ``--write-full-matrix``)
    and the eigenvalues (between-class variance of each output dimension, decreasing)."""

    matrix: np.ndarray
    full: np.ndarray
    eigenvalues: np.ndarray

    def info(self) -> dict:
        dim = len(self.matrix)
        return {"dim": dim, "input_dim": int(self.full.shape[1]),
                "eigenvalues_sum": float(self.eigenvalues.sum()),
                "eigenvalues_kept_sum": float(self.eigenvalues[:dim].sum()),
                "top_eigenvalues": [round(float(v), 4) for v in self.eigenvalues[:10]]}


def _cholesky_with_smoothing(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; as est-lda, 1e-3 x mean diagonal added when ``cov`` is not positive
    definite (too few classes or frames for the spliced dimension)."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        smooth = 1.0e-3 * np.trace(cov) / len(cov)
        log.info("LDA: within-class covariance not positive definite; adding %.3g to its diagonal", smooth)
        return np.linalg.cholesky(cov + smooth * np.eye(len(cov)))


def estimate_lda(stats: LdaStats, dim: int = DEFAULT_LDA_DIM) -> tuple[Lda, float]:
    """As ``est-lda --dim``: returns (:class:`Lda`, frame count)."""
    num_classes = int((stats.count > 0).sum())
    if not 0 < dim <= stats.scatter.shape[0]:
        raise ValueError(f"LDA dimension {dim} not in 1..{stats.scatter.shape[0]} (the spliced dimension)")
    if dim >= num_classes:
        raise ValueError(f"LDA dimension {dim} needs more than {num_classes} classes with frames")
    total_cov, between, _ = stats.covariances()
    chol = _cholesky_with_smoothing(total_cov - between)
    chol_inv = np.linalg.inv(chol)
    whitened_between = chol_inv @ between @ chol_inv.T
    eigenvalues, vectors = np.linalg.eigh((whitened_between + whitened_between.T) / 2)
    order = np.argsort(eigenvalues)[::-1]
    full = vectors[:, order].T @ chol_inv
    return Lda(full[:dim].copy(), full, eigenvalues[order]), float(stats.count.sum())


def frame_weights(alignment: np.ndarray, phone_of_tid: np.ndarray, silence_phones) -> np.ndarray:
    """``weight-silence-post 0.0``: weight 0 for frames of silence phones, 1 for the rest."""
    return (~np.isin(phone_of_tid[alignment], np.asarray(list(silence_phones), dtype=np.int64))).astype(np.float64)


def accumulate_lda_stats(items, tables, silence_phones, num_pdfs: int, dim: int) -> LdaStats:
    """``acc-lda`` over ``items`` = (alignment, features of dimension ``dim``) pairs, the classes
    being pdfs (``tables``: :class:`~weakalign.kaldi_steps.tree.TransitionTables` of the alignments' model)."""
    stats = LdaStats.zeros(num_pdfs, dim)
    for ali, feats in items:
        stats.add_frames(feats, tables.pdf[ali], frame_weights(ali, tables.phone, silence_phones))
    return stats


# ---------------------------------------------------------------------------------------------
# MLLT


@dataclass
class MlltStats:
    """``gmm-acc-mllt``'s accumulators: β (frames) and G (D x D x D: G[j] for output row j)."""

    beta: float
    G: np.ndarray
    loglike: float = 0.0  # Σ γ log p(x | pdf), the "Gaussian only" likelihood gmm-acc-mllt logs

    @classmethod
    def zeros(cls, dim: int) -> "MlltStats":
        return cls(0.0, np.zeros((dim, dim, dim)))

    def add(self, other: "MlltStats") -> None:
        self.beta += other.beta
        self.G += other.G
        self.loglike += other.loglike

    @classmethod
    def merge(cls, parts) -> "MlltStats":
        """The sum of the jobs' statistics."""
        return _sum_stats(parts)


def _scatter_per_gaussian(post: np.ndarray, x: np.ndarray, means: np.ndarray, block: int = 2048) -> np.ndarray:
    """Σₜ γₜₘ (μₘ - xₜ)(μₘ - xₜ)ᵀ for each Gaussian m (M x D x D), frames taken in blocks so
    the T x D² outer products stay small."""
    num_gauss, dim = means.shape
    second = np.zeros((num_gauss, dim * dim))
    for lo in range(0, len(x), block):
        xb = x[lo:lo + block]
        second += post[lo:lo + block].T @ (xb[:, :, None] * xb[:, None, :]).reshape(len(xb), -1)
    second = second.reshape(num_gauss, dim, dim)
    occ = post.sum(0)
    first = post.T @ x
    cross = means[:, :, None] * first[:, None, :]
    return second - cross - cross.transpose(0, 2, 1) + occ[:, None, None] * means[:, :, None] * means[:, None, :]


def accumulate_mllt_stats(params, feats: np.ndarray, pdfs: np.ndarray, weights: np.ndarray) -> MlltStats:
    """``gmm-acc-mllt`` for frames ``feats`` aligned to ``pdfs`` with frame ``weights`` (0 for
    silence): Gaussian posteriors within each frame's pdf (``params``: a
    :class:`~weakalign.kaldi_steps.diag_gmm.GmmParams` of the current model)."""
    feats = np.asarray(feats, dtype=np.float64)
    stats = MlltStats.zeros(feats.shape[1])
    keep = weights > 0
    feats, pdfs, weights = feats[keep], pdfs[keep], weights[keep]
    for chunk, lo, hi, post, frame_ll in pdf_posteriors(params, feats, pdfs):
        post = post * weights[chunk, None]
        inv_vars = params.inv_vars[lo:hi]
        stats.loglike += float((frame_ll * weights[chunk]).sum())
        scatter = _scatter_per_gaussian(post, feats[chunk], params.means_invvars[lo:hi] / inv_vars)
        stats.G += np.einsum("mj,mab->jab", inv_vars, scatter)
        stats.beta += float(post.sum())
    return stats


def mllt_objective(transform: np.ndarray, stats: MlltStats) -> float:
    """The MLLT auxiliary function ``β log|det A| - ½ Σⱼ aⱼᵀ G_j aⱼ`` (up to a constant)."""
    _, logdet = np.linalg.slogdet(transform)
    quad = np.einsum("ja,jab,jb->", transform, stats.G, transform)
    return float(stats.beta * logdet - 0.5 * quad)


def estimate_mllt(stats: MlltStats, passes: int = MLLT_PASSES) -> tuple[np.ndarray, dict]:
    """As ``est-mllt``: the square transform from the identity by ``passes`` row-by-row updates.

    Returns (A, info) with the objective before/after and its gain per frame.
    """
    dim = stats.G.shape[0]
    if stats.beta < 10 * dim:
        log.warning("MLLT: %s count %.0f for dimension %d", "very small" if stats.beta > 2 * dim else "insufficient",
                    stats.beta, dim)
    G_inv = np.linalg.inv(stats.G)
    transform = np.eye(dim)
    before = mllt_objective(transform, stats)
    for _ in range(passes):
        inverse = np.linalg.inv(transform)  # afresh every pass, so the rank-1 updates cannot drift
        for j in range(dim):
            cofactor = inverse[:, j].copy()  # row j of A⁻ᵀ, ∝ the j-th cofactors: det(A) = aⱼ · cⱼ det(A)
            direction = G_inv[j] @ cofactor
            new_row = direction * np.sqrt(stats.beta / (cofactor @ direction))
            change = new_row - transform[j]
            transform[j] = new_row
            # Sherman-Morrison for A + eⱼ changeᵀ: O(D²) per row instead of a fresh inverse.
            inverse -= np.outer(cofactor, change @ inverse) / (1.0 + change @ cofactor)
    after = mllt_objective(transform, stats)
    return transform, {"objf_before": before, "objf_after": after, "frames": stats.beta,
                       "objf_impr_per_frame": (after - before) / max(stats.beta, 1e-10)}


def transform_means(am, transform: np.ndarray):
    """``gmm-transform-means``: every Gaussian's mean becomes A μ, weights and variances kept."""
    import kaldi_hmm_gmm as khg

    transform = np.asarray(transform, dtype=np.float64)
    out = khg.AmDiagGmm()
    for j in range(am.num_pdfs):
        gmm = am.get_pdf(j)
        inv_vars = np.asarray(gmm.inv_vars, dtype=np.float64)
        means = np.asarray(gmm.means_invvars, dtype=np.float64) / inv_vars
        out.add_pdf(gmm_from_arrays(np.asarray(gmm.weights, dtype=np.float64), means @ transform.T, 1.0 / inv_vars))
    return out
