"""Diagonal-covariance GMMs of an HMM's pdfs: statistics, re-estimation, mixing up.

As Kaldi's ``gmm-init-mono``, ``gmm-acc-stats-ali``, ``gmm-est`` and ``gmm-mixup``, on
``kaldi_hmm_gmm`` (khg): statistics are accumulated in numpy, one matrix product per pdf over all
its frames (:func:`accumulate_gmm_stats`); :func:`update_model` re-estimates the Gaussians with
Kaldi's rules (khg's ``AccumAmDiagGmm.get_acc`` returns copies, so its accumulators cannot be
filled from numpy), the transitions with khg's ``mle_update``, and mixes up as Kaldi's
``SplitByCount`` but seeded (khg's perturbs from ``std::random_device``). The maths only: a job's
utterances are :mod:`~weakalign.kaldi_steps.shard`'s, the training loops
:mod:`~weakalign.kaldi_steps.gmm`'s.

>>> import numpy as np
>>> am = init_mono_model(np.array([1.0, 2.0]), np.array([4.0, 9.0]), num_pdfs=3)
>>> am.num_pdfs, am.num_gauss
(3, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def single_gaussian_gmm(mean: np.ndarray, var: np.ndarray):
    """A one-component ``khg.DiagGmm`` with this mean and (diagonal) variance."""
    import kaldi_hmm_gmm as khg

    gmm = khg.DiagGmm(1, len(mean))
    gmm.set_weights(np.ones(1, dtype=np.float32))
    inv = (1.0 / np.asarray(var, dtype=np.float64))[None, :].astype(np.float32)
    gmm.set_invvars_and_means(inv, np.asarray(mean, dtype=np.float32)[None, :])
    gmm.compute_gconsts()
    return gmm


def init_mono_model(mean: np.ndarray, var: np.ndarray, num_pdfs: int):
    """As ``gmm-init-mono``: every pdf one Gaussian with the global mean and variance."""
    import kaldi_hmm_gmm as khg

    am = khg.AmDiagGmm()
    for _ in range(num_pdfs):
        am.add_pdf(single_gaussian_gmm(mean, var))
    return am


@dataclass
class GmmParams:
    """The AmDiagGmm as flat numpy arrays: Gaussians of pdf j are rows offsets[j]:offsets[j+1]."""

    offsets: np.ndarray
    gconsts: np.ndarray  # (G,)
    means_invvars: np.ndarray  # (G, D)
    inv_vars: np.ndarray  # (G, D)

    @classmethod
    def from_am(cls, am) -> "GmmParams":
        gc, mi, iv, sizes = [], [], [], []
        for j in range(am.num_pdfs):
            g = am.get_pdf(j)
            gc.append(np.asarray(g.gconsts, dtype=np.float64))
            mi.append(np.asarray(g.means_invvars, dtype=np.float64))
            iv.append(np.asarray(g.inv_vars, dtype=np.float64))
            sizes.append(len(gc[-1]))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return cls(offsets, np.concatenate(gc), np.concatenate(mi), np.concatenate(iv))


@dataclass
class GmmStats:
    """Zeroth, first and second order statistics per Gaussian (rows as in :class:`GmmParams`)."""

    occ: np.ndarray
    x: np.ndarray
    x2: np.ndarray
    loglike: float = 0.0
    frames: int = 0

    @classmethod
    def zeros(cls, num_gauss: int, dim: int) -> "GmmStats":
        return cls(np.zeros(num_gauss), np.zeros((num_gauss, dim)), np.zeros((num_gauss, dim)))

    def add(self, other: "GmmStats") -> None:
        self.occ += other.occ
        self.x += other.x
        self.x2 += other.x2
        self.loglike += other.loglike
        self.frames += other.frames

    def pdf_occs(self, offsets: np.ndarray) -> np.ndarray:
        return np.add.reduceat(self.occ, offsets[:-1]) if len(self.occ) else np.zeros(len(offsets) - 1)


def pdf_posteriors(params: GmmParams, feats: np.ndarray, pdfs: np.ndarray):
    """Per pdf of ``pdfs`` (T,), its frames' Gaussian posteriors within that pdf, one vectorised pass
    per pdf: yields (frame indices, first Gaussian row, end row, posteriors (n x M), frame log-likelihoods)."""
    order = np.argsort(pdfs, kind="stable")
    bounds = np.flatnonzero(np.diff(pdfs[order])) + 1
    for chunk in np.split(order, bounds):
        if len(chunk) == 0:
            continue
        j = int(pdfs[chunk[0]])
        lo, hi = params.offsets[j], params.offsets[j + 1]
        x = feats[chunk]
        ll = params.gconsts[lo:hi] + x @ params.means_invvars[lo:hi].T - 0.5 * ((x * x) @ params.inv_vars[lo:hi].T)
        top = ll.max(1, keepdims=True)
        post = np.exp(ll - top)
        tot = post.sum(1, keepdims=True)
        post /= tot
        yield chunk, lo, hi, post, (np.log(tot) + top)[:, 0]


def accumulate_gmm_stats(params: GmmParams, feats: np.ndarray, pdfs: np.ndarray,
                         stats_feats: np.ndarray | None = None) -> GmmStats:
    """As ``gmm-acc-stats-ali`` for frames ``feats`` (T x D) aligned to ``pdfs`` (T,).

    Gaussian posteriors within each frame's pdf; one vectorised pass per pdf. ``stats_feats``
    (T x D): accumulate these frames with the posteriors of ``feats`` instead
    (``gmm-acc-stats-twofeats``).
    """
    feats = np.asarray(feats, dtype=np.float64)
    stats_feats = feats if stats_feats is None else np.asarray(stats_feats, dtype=np.float64)
    stats = GmmStats.zeros(len(params.gconsts), stats_feats.shape[1])
    for chunk, lo, hi, post, frame_ll in pdf_posteriors(params, feats, pdfs):
        x = stats_feats[chunk]
        stats.loglike += float(frame_ll.sum())
        stats.occ[lo:hi] += post.sum(0)
        stats.x[lo:hi] += post.T @ x
        stats.x2[lo:hi] += post.T @ (x * x)
    stats.frames = len(pdfs)
    return stats


def mle_update_gmm(gmm, occ: np.ndarray, x: np.ndarray, x2: np.ndarray, *,
                   min_gaussian_occupancy: float = 10.0, min_gaussian_weight: float = 1e-5,
                   min_variance: float = 0.001):
    """Maximum-likelihood re-estimate of one ``DiagGmm`` from its statistics, as Kaldi's
    ``MleDiagGmmUpdate``: a Gaussian is re-estimated when its occupancy is *above*
    ``min_gaussian_occupancy`` and its weight above ``min_gaussian_weight`` (variances floored at
    ``min_variance``); the others are removed in index order, except that the last one left is kept
    with its old mean and variance (weight at least ``min_gaussian_weight``); weights renormalised.
    No statistics at all: the GMM is unchanged (one Gaussian) or reduced to its last Gaussian.

    Returns (new DiagGmm, number of Gaussians removed).
    """
    num = len(occ)
    total = float(occ.sum())
    prob = occ / total if total != 0.0 else np.full(num, 1.0 / num)
    old_iv = np.asarray(gmm.inv_vars, dtype=np.float64)
    means = np.asarray(gmm.means_invvars, dtype=np.float64) / old_iv
    variances = 1.0 / old_iv
    weights = np.asarray(gmm.weights, dtype=np.float64).copy()
    removed = []
    for g in range(num):
        if occ[g] > min_gaussian_occupancy and prob[g] > min_gaussian_weight:
            weights[g] = prob[g]
            means[g] = x[g] / occ[g]
            variances[g] = np.maximum(x2[g] / occ[g] - means[g] * means[g], min_variance)
        elif len(removed) < num - 1:
            removed.append(g)
        else:
            weights[g] = max(prob[g], min_gaussian_weight)
    if total == 0.0 and num == 1:
        return gmm, 0
    keep = np.setdiff1d(np.arange(num), removed)
    w = weights[keep]
    return gmm_from_arrays(w / w.sum() if removed else w, means[keep], variances[keep]), len(removed)


def gmm_from_arrays(weights: np.ndarray, means: np.ndarray, variances: np.ndarray):
    """A ``khg.DiagGmm`` from weights (G,), means (G, D), variances (G, D)."""
    import kaldi_hmm_gmm as khg

    gmm = khg.DiagGmm(len(weights), means.shape[1])
    gmm.set_weights(np.asarray(weights, dtype=np.float32))
    gmm.set_invvars_and_means((1.0 / variances).astype(np.float32), means.astype(np.float32))
    gmm.compute_gconsts()
    return gmm


def split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> np.ndarray:
    """Gaussians per pdf after mixing up, as Kaldi's ``GetSplitTargets``: starting from one
    per pdf, repeatedly give one more to the pdf with the largest occ^power per Gaussian,
    unless that would leave it less than ``min_count`` frames per Gaussian."""
    import heapq

    occs = np.asarray(occs, dtype=np.float64)
    num = np.ones(len(occs), dtype=np.int64)
    prio = np.power(np.maximum(occs, 0.0), power)
    heap = [(-prio[j], j) for j in range(len(occs))]
    heapq.heapify(heap)
    total = len(occs)
    while total < target and heap:
        _, j = heapq.heappop(heap)
        if prio[j] == 0 or (num[j] + 1) * min_count >= occs[j]:
            continue  # this pdf cannot take more Gaussians
        num[j] += 1
        total += 1
        heapq.heappush(heap, (-prio[j] / num[j], j))
    return num


def split_gmm(gmm, target: int, perturb: float, rng):
    """Kaldi's ``DiagGmm::Split``: until ``target``, halve the heaviest component (the first on ties)
    into two whose ``means_invvars`` move apart by ``± perturb * RandGauss() * sqrt(inv_var)`` (mean
    shifts of ``perturb`` standard deviations), in float32 as Kaldi's model holds them; ``rng`` a
    :class:`~.kaldi_random.GlibcRandom` (Kaldi's draws)."""
    weights = np.asarray(gmm.weights, dtype=np.float32).copy()
    if target <= len(weights):
        return gmm
    inv_vars = np.asarray(gmm.inv_vars, dtype=np.float32)
    means_invvars = np.asarray(gmm.means_invvars, dtype=np.float32)
    num, dim = len(weights), inv_vars.shape[1]
    weights = np.concatenate([weights, np.zeros(target - num, dtype=np.float32)])
    inv_vars = np.concatenate([inv_vars, np.zeros((target - num, dim), dtype=np.float32)])
    means_invvars = np.concatenate([means_invvars, np.zeros((target - num, dim), dtype=np.float32)])
    factor = np.float32(perturb)
    while num < target:
        k = int(np.argmax(weights[:num]))
        weights[k] /= np.float32(2.0)
        weights[num] = weights[k]
        draws = np.array([rng.rand_gauss() for _ in range(dim)], dtype=np.float32)
        shift = factor * (draws * np.sqrt(inv_vars[k], dtype=np.float32))
        inv_vars[num] = inv_vars[k]
        means_invvars[num] = means_invvars[k] + shift
        means_invvars[k] = means_invvars[k] - shift
        num += 1
    import kaldi_hmm_gmm as khg

    out = khg.DiagGmm(target, dim)
    out.set_weights(weights)
    out.set_invvars_and_means(inv_vars, means_invvars / inv_vars)  # khg sets means_invvars = means * inv_vars
    out.compute_gconsts()
    return out


def split_by_count(am, occs: np.ndarray, target: int, *, perturb: float = 0.01, power: float = 0.25,
                   min_count: float = 20.0):
    """Mixing-up as Kaldi's ``AmDiagGmm::SplitByCount`` (``gmm-est --mix-up``, ``gmm-mixup``), with
    Kaldi's own random draws (:class:`~.kaldi_random.GlibcRandom` from seed 1, as in a fresh Kaldi
    process): khg's own ``split_by_count`` perturbs with ``std::random_device``, so two runs differ."""
    import kaldi_hmm_gmm as khg

    from .kaldi_random import GlibcRandom

    rng = GlibcRandom(1)
    targets = split_targets(occs, target, power, min_count)
    out = khg.AmDiagGmm()
    for j in range(am.num_pdfs):
        out.add_pdf(split_gmm(am.get_pdf(j), int(targets[j]), perturb, rng))
    return out


def update_model(trans_model, am, stats: GmmStats, trans_counts: np.ndarray, *, mixup: int = 0,
                 power: float = 0.25, min_gaussian_occupancy: float = 10.0, perturb: float = 0.01,
                 min_count: float = 20.0):
    """As ``gmm-est``: ML update of transitions (khg ``mle_update``) and Gaussians, then mixing
    up towards ``mixup`` Gaussians (:func:`split_by_count`, Kaldi's allocation by occupancy^power).

    Returns (new AmDiagGmm, info). khg's ``AccumAmDiagGmm.get_acc`` returns copies, so its
    accumulators cannot be filled from numpy statistics; the Gaussian update is done here.
    """
    import kaldi_hmm_gmm as khg

    offsets = GmmParams.from_am(am).offsets
    t_impr, t_count = trans_model.mle_update(np.asarray(trans_counts, dtype=np.float64),
                                             khg.MleTransitionUpdateConfig())
    new_am = khg.AmDiagGmm()
    removed = 0
    for j in range(am.num_pdfs):
        lo, hi = offsets[j], offsets[j + 1]
        gmm, n_removed = mle_update_gmm(am.get_pdf(j), stats.occ[lo:hi], stats.x[lo:hi], stats.x2[lo:hi],
                                        min_gaussian_occupancy=min_gaussian_occupancy)
        removed += n_removed
        new_am.add_pdf(gmm)
    occs = stats.pdf_occs(offsets)
    if mixup > 0:
        # As gmm-est: whenever --mix-up is given, even when the model already has that many Gaussians
        # (the targets are dealt from one per pdf, so pdfs below their share still split).
        new_am = split_by_count(new_am, occs, int(mixup), perturb=perturb, power=power, min_count=min_count)
    return new_am, {"trans_objf_impr_per_frame": t_impr / max(t_count, 1.0), "gauss_removed": removed,
                    "num_gauss": new_am.num_gauss, "occs": occs}


def transition_counts(alignments, num_transition_ids: int) -> np.ndarray:
    """Occupation count of every transition-id (index 0 unused), as Kaldi's transition accumulator."""
    counts = np.zeros(num_transition_ids + 1)
    for ali in alignments:
        counts += np.bincount(ali, minlength=num_transition_ids + 1)
    return counts
