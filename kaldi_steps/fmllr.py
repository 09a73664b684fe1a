"""fMLLR (constrained MLLR) per speaker, as Kaldi's ``gmm-est-fmllr`` (``src/transform/fmllr-diag-gmm.cc``),
in numpy; the Kaldi ``trans.JOB`` archives; ``compose-transforms --b-is-affine=true``.

**Statistics** (``FmllrDiagGmmAccs``). A speaker's frames x (D dims, x̃ = [x; 1]) with weights w (the
frame's posterior from its alignment, silence 0: ``weight-silence-post``) and posteriors γₜₘ of the
Gaussians m of the frame's aligned pdf (computed from the model on the features as they are):
``β = Σₜ wₜ``, ``K = Σₜₘ wₜγₜₘ (σ⁻²ₘ ⊙ μₘ) x̃ₜᵀ`` (D x D+1) and, per dimension i,
``G_i = Σₜₘ wₜγₜₘ σ⁻²ₘᵢ x̃ₜ x̃ₜᵀ`` (D+1 x D+1).

**Update** (``ComputeFmllrMatrixDiagGmmFull``). W = [A b] (D x D+1) maps x to A x + b; its auxiliary
function, the data's expected log-likelihood under the transform up to a constant (with the Jacobian
log|det A|), is ``Q(W) = β log|det A| + Σᵢ (wᵢᵀ kᵢ - ½ wᵢᵀ G_i wᵢ)`` (wᵢ, kᵢ the i-th rows of W, K).
Row by row, from the identity: with cᵢ the i-th row of A⁻ᵀ (the cofactors up to a factor det A,
extended with a 0), the best row is ``wᵢ = G_i⁻¹ (α cᵢ + kᵢ)`` where α solves the
quadratic ``e₁ α² + e₂ α - β = 0`` (e₁ = cᵢᵀG_i⁻¹cᵢ, e₂ = cᵢᵀG_i⁻¹kᵢ); of its two roots the one with the larger ``β log|α e₁ + e₂| - ½ α² e₁``. Each row
update maximises Q over that row exactly, so Q never decreases; ``num_iters`` (40) passes over the rows.
A speaker with ``β`` at most ``min_count`` (20 frames, ``FmllrOptions``) keeps the identity, as does
an update that would lower Q.

>>> import numpy as np
>>> stats = FmllrStats.zeros(2)
>>> W, info = estimate_fmllr(stats)
>>> W.tolist(), info["updated"]
([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], False)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .diag_gmm import pdf_posteriors

#: ``FmllrOptions``: passes over the rows and the fewest frames to estimate from.
FMLLR_ITERS = 40
FMLLR_MIN_COUNT = 20.0
#: ``train_sat.sh``: fMLLR re-estimated before the statistics of iterations 2 4 6 12 (of 35).
DEFAULT_FMLLR_ITERS = (2, 4, 6, 12)


def identity_transform(dim: int) -> np.ndarray:
    """[I 0]: the D x D+1 transform that leaves the features as they are."""
    return np.hstack([np.eye(dim), np.zeros((dim, 1))])


def apply_fmllr(feats: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``transform-feats`` with an affine D x D+1 matrix: A x + b for every frame (float32)."""
    transform = np.asarray(transform, dtype=np.float64)
    dim = transform.shape[0]
    out = np.asarray(feats, dtype=np.float64) @ transform[:, :dim].T + transform[:, dim]
    return np.ascontiguousarray(out, dtype=np.float32)


def compose_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``compose-transforms --b-is-affine=true a b``: the transform that applies b, then a."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dim = a.shape[0]
    out = a[:, :dim] @ b
    out[:, dim] += a[:, dim]
    return out


@dataclass
class FmllrStats:
    """One speaker's fMLLR statistics (see the module docstring); ``loglike`` the frames' weighted
    log-likelihood under the model on the features the statistics were taken from."""

    beta: float
    K: np.ndarray  # D x D+1
    G: np.ndarray  # D x D+1 x D+1
    loglike: float = 0.0

    @classmethod
    def zeros(cls, dim: int) -> "FmllrStats":
        return cls(0.0, np.zeros((dim, dim + 1)), np.zeros((dim, dim + 1, dim + 1)))

    @property
    def dim(self) -> int:
        return self.K.shape[0]

    def add(self, other: "FmllrStats") -> None:
        self.beta += other.beta
        self.K += other.K
        self.G += other.G
        self.loglike += other.loglike


def accumulate_fmllr_stats(params, feats: np.ndarray, pdfs: np.ndarray, weights: np.ndarray | None = None,
                           stats: FmllrStats | None = None, block: int = 4096) -> FmllrStats:
    """``gmm-est-fmllr``'s accumulation for frames ``feats`` (T x D) aligned to ``pdfs`` with frame
    ``weights`` (default 1): Gaussian posteriors within the pdf from the model ``params``
    (:class:`~.diag_gmm.GmmParams`). Adds to ``stats`` when given; returns the statistics."""
    feats = np.asarray(feats, dtype=np.float64)
    num_frames, dim = feats.shape
    stats = stats or FmllrStats.zeros(dim)
    weights = np.ones(num_frames) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = weights > 0
    if not keep.any():
        return stats
    feats, pdfs, weights = feats[keep], np.asarray(pdfs)[keep], weights[keep]
    mean_invvar = np.zeros_like(feats)  # Σₘ γₜₘ σ⁻²ₘ ⊙ μₘ per frame
    invvar = np.zeros_like(feats)       # Σₘ γₜₘ σ⁻²ₘ per frame
    for chunk, lo, hi, post, frame_ll in pdf_posteriors(params, feats, pdfs):
        mean_invvar[chunk] = post @ params.means_invvars[lo:hi]
        invvar[chunk] = post @ params.inv_vars[lo:hi]
        stats.loglike += float(weights[chunk] @ frame_ll)
    extended = np.hstack([feats, np.ones((len(feats), 1))])
    stats.beta += float(weights.sum())
    stats.K += (mean_invvar * weights[:, None]).T @ extended
    scaled = invvar * weights[:, None]
    for start in range(0, len(feats), block):
        x = extended[start:start + block]
        outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)
        stats.G += (scaled[start:start + block].T @ outer).reshape(dim, dim + 1, dim + 1)
    return stats


def fmllr_objective(transform: np.ndarray, stats: FmllrStats) -> float:
    """``FmllrAuxFuncDiagGmm``: β log|det A| + Σᵢ (wᵢᵀkᵢ - ½ wᵢᵀ G_i wᵢ)."""
    transform = np.asarray(transform, dtype=np.float64)
    dim = stats.dim
    _, logdet = np.linalg.slogdet(transform[:, :dim])
    quadratic = np.einsum("ij,ijk,ik->", transform, stats.G, transform)
    return float(stats.beta * logdet + np.sum(transform * stats.K) - 0.5 * quadratic)


def update_row(transform: np.ndarray, inv_g: np.ndarray, k: np.ndarray, beta: float, row: int) -> None:
    """Row ``row`` of ``transform`` replaced by its maximiser given the other rows (in place)."""
    dim = transform.shape[0]
    cofactor = np.zeros(dim + 1)
    cofactor[:dim] = np.linalg.inv(transform[:, :dim]).T[row]
    g_c = inv_g @ cofactor
    e1, e2 = float(g_c @ cofactor), float(g_c @ k)
    root = np.sqrt(e2 * e2 + 4.0 * e1 * beta)
    candidates = ((-e2 + root) / (2.0 * e1), (-e2 - root) / (2.0 * e1))
    alpha = max(candidates, key=lambda a: beta * np.log(abs(a * e1 + e2)) - 0.5 * a * a * e1)
    transform[row] = inv_g @ (alpha * cofactor + k)


def estimate_fmllr(stats: FmllrStats, start: np.ndarray | None = None, *, num_iters: int = FMLLR_ITERS,
                   min_count: float = FMLLR_MIN_COUNT) -> tuple[np.ndarray, dict]:
    """The full fMLLR update from ``stats``, starting at ``start`` (default the identity).

    Returns (W, info) with info ``frames``, ``objf_before``/``objf_after`` (at ``start`` and W),
    ``objf_impr`` and ``updated`` (False: too few frames, or Q did not increase: W is ``start``).

    A speaker whose weighted frames are fewer than the D+1 dimensions of ``x⁺`` has singular
    statistics ``G``: no full transform is determined (Kaldi's ``gmm-est-fmllr`` stops on such a
    speaker, "Cannot invert"). Like one below ``min_count``, it keeps ``start``: e.g. a 0.3 s
    utterance that is its own speaker. ``info["reason"]`` says why a speaker kept ``start``: ``below
    min_count``, ``singular statistics`` (with its ``rank``) or ``no gain`` (Q did not increase).
    """
    dim = stats.dim
    start = identity_transform(dim) if start is None else np.asarray(start, dtype=np.float64)
    info = {"frames": float(stats.beta), "updated": False, "objf_impr": 0.0}
    if stats.beta <= min_count:
        info["reason"] = "below min_count"
        return start.copy(), info
    rank = int(np.min(np.linalg.matrix_rank(stats.G)))
    if rank < dim + 1:
        info.update(reason="singular statistics", rank=rank)
        return start.copy(), info
    before = fmllr_objective(start, stats)
    inv_g = np.linalg.inv(stats.G)
    transform = start.copy()
    for _ in range(num_iters):
        for row in range(dim):
            update_row(transform, inv_g[row], stats.K[row], stats.beta, row)
    after = fmllr_objective(transform, stats)
    info.update(objf_before=before, objf_after=after)
    if after < before and not np.isclose(after, before, rtol=1e-9):
        info["reason"] = "no gain"
        return start.copy(), info
    info.update(updated=True, objf_impr=after - before)
    return transform, info


# ---------------------------------------------------------------------------------------------
# Kaldi archives


def write_trans_archive(path, transforms: dict[str, np.ndarray]) -> None:
    """``trans.JOB``: a binary Kaldi table archive of speaker -> float matrix (D x D+1), keys sorted,
    as ``gmm-est-fmllr ... ark:trans.JOB`` writes it (kaldiio writes the same ``FM`` matrices)."""
    import kaldiio

    from weakalign.pipeline.io import atomic_path

    with atomic_path(path) as tmp:
        kaldiio.save_ark(str(tmp), {spk: np.asarray(transforms[spk], dtype=np.float32)
                                    for spk in sorted(transforms)})


def read_trans_archive(path) -> dict[str, np.ndarray]:
    """speaker -> transform of a ``trans.JOB`` archive (Kaldi's or ours)."""
    import kaldiio

    return {spk: np.asarray(mat) for spk, mat in kaldiio.load_ark(str(path))}
