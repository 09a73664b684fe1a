"""How far to trust a WER: bootstrap confidence intervals and a paired bootstrap test.

Both resample *utterances* with replacement (Bisani & Ney 2004): a replica's WER is
``sum(errors[idx]) / sum(words[idx])`` over the sampled utterances ``idx``. The
counts per utterance come from :mod:`weakalign.e2e.scoring` (sclite costs), so the
resampling is plain numpy on two integer vectors, 1000s of replicas in milliseconds.

- :func:`bootstrap_ci`: percentile interval of the replicas' WER (seeded).
- :func:`paired_bootstrap_test`: both systems are scored on the *same* resampled
  utterances (Koehn 2004); the two-sided p-value is the share of replicas whose
  WER difference, centred on the observed difference (the null hypothesis of no
  difference), is at least as far from 0 as the observed one.

- :func:`paired_permutation_test`: sign-flip test on per-unit error differences
  ``errors_b - errors_a``; a unit is an utterance, or an (utterance, seed pair) when the
  differences of several seed pairs are pooled. Exact (all ``2^k`` sign patterns of the
  ``k`` non-zero differences) when ``k <= 16``, else ``permutations`` seeded random flips.

``kaldialign.bootstrap_wer_ci`` does the same resampling in C++ but gives a
normal-approximation interval and a one-sided probability of improvement; the
tests check our interval against it.

>>> errors, words = [0, 1, 2, 0], [3, 4, 5, 2]
>>> lo, hi = bootstrap_ci(errors, words, replicas=2000, seed=1)["ci95"]
>>> lo <= 100 * 3 / 14 <= hi
True
>>> paired_bootstrap_test(errors, errors, words)["p_value"]
1.0
>>> paired_permutation_test(errors, errors, words)["p_value"]
1.0
>>> # b makes one more error than a on each of 5 utterances: only the all-plus and
>>> # all-minus sign patterns are as extreme as that, p = 2 / 2**5 (exact).
>>> paired_permutation_test([0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [4, 4, 4, 4, 4])["p_value"]
0.0625
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_REPLICAS = 2000


def _replica_indices(n: int, replicas: int, seed: int) -> np.ndarray:
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of utterances")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(replicas, n))


def _rates(errors: np.ndarray, words: np.ndarray, idx: np.ndarray) -> np.ndarray:
    w = words[idx].sum(axis=1).astype(float)
    e = errors[idx].sum(axis=1).astype(float)
    # A replica drawing only empty references has no words; it tells nothing about the rate.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, 100.0 * e / np.maximum(w, 1), np.nan)


def bootstrap_ci(errors: Sequence[float], words: Sequence[int], *, replicas: int = DEFAULT_REPLICAS,
                 seed: int = 0, level: float = 0.95) -> dict:
    """WER (percent) with a percentile bootstrap interval: ``{"wer", "ci95": [lo, hi], "std", "replicas"}``."""
    errors, words = np.asarray(errors, dtype=float), np.asarray(words, dtype=float)
    idx = _replica_indices(len(errors), replicas, seed)
    rates = _rates(errors, words, idx)
    rates = rates[~np.isnan(rates)]
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(rates, [alpha, 1 - alpha])
    wer = 100.0 * errors.sum() / words.sum() if words.sum() else float("nan")
    return {"wer": round(float(wer), 2), "ci95": [round(float(lo), 2), round(float(hi), 2)],
            "std": round(float(rates.std()), 3), "replicas": replicas, "seed": seed}


def paired_bootstrap_test(errors_a: Sequence[float], errors_b: Sequence[float], words: Sequence[int], *,
                          replicas: int = DEFAULT_REPLICAS, seed: int = 0) -> dict:
    """Two-sided paired bootstrap test of ``WER(b) - WER(a)`` on the same utterances.

    Returns ``{"delta": WER_b - WER_a (absolute %), "ci95": interval of delta, "p_value",
    "p_b_better": share of replicas where b has the lower WER}``.
    """
    ea, eb = np.asarray(errors_a, dtype=float), np.asarray(errors_b, dtype=float)
    words = np.asarray(words, dtype=float)
    if not (len(ea) == len(eb) == len(words)):
        raise ValueError(f"paired test needs the same utterances: {len(ea)}, {len(eb)}, {len(words)} given")
    idx = _replica_indices(len(ea), replicas, seed)
    w = words[idx].sum(axis=1)
    keep = w > 0
    diff = 100.0 * (eb - ea)[idx].sum(axis=1)[keep] / w[keep]
    observed = 100.0 * (eb - ea).sum() / words.sum()
    # Centre the replicas on 0 (the null hypothesis) and count those at least as extreme.
    extreme = np.abs(diff - observed) >= abs(observed) - 1e-12
    p = (extreme.sum() + 1) / (len(diff) + 1)
    lo, hi = np.quantile(diff, [0.025, 0.975])
    return {"delta": round(float(observed), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
            "p_value": float(min(1.0, p)), "p_b_better": float((diff < 0).mean()),
            "replicas": replicas, "seed": seed}


EXACT_MAX_NONZERO = 16


def paired_permutation_test(errors_a: Sequence[float], errors_b: Sequence[float], words: Sequence[int], *,
                            permutations: int = 10000, seed: int = 0) -> dict:
    """Two-sided paired permutation (sign-flip) test of ``WER(b) - WER(a)``.

    ``errors_a[i]``, ``errors_b[i]`` and ``words[i]`` belong to one unit: an utterance scored by
    both systems, or, to pool several seeds, an utterance scored by seed ``k`` of a and seed
    ``k`` of b (the arrays are then the seed pairs' per-utterance vectors concatenated, ``words``
    repeated). Under the null hypothesis the two systems are exchangeable within every unit, so
    each difference ``d_i = errors_b[i] - errors_a[i]`` is as likely to have either sign. The
    statistic is ``sum(d)`` (the WER difference times the reference words); the p-value is the
    share of sign patterns whose ``|sum(s * d)|`` reaches ``|sum(d)|``: exactly over all
    ``2^k`` patterns of the ``k`` non-zero differences when ``k <= 16``, else over
    ``permutations`` random patterns (seeded, the observed one counted: ``(hits + 1) / (n + 1)``).

    Returns ``{"delta": WER_b - WER_a (absolute %), "p_value", "units", "nonzero", "exact",
    "permutations", "seed"}``.
    """
    ea, eb = np.asarray(errors_a, dtype=float), np.asarray(errors_b, dtype=float)
    words = np.asarray(words, dtype=float)
    if not (ea.shape == eb.shape == words.shape) or ea.ndim != 1:
        raise ValueError(f"paired test needs the same units: {ea.shape}, {eb.shape}, {words.shape} given")
    if len(ea) == 0:
        raise ValueError("cannot test an empty set of utterances")
    diff = eb - ea
    d = diff[np.abs(diff) > 1e-12]
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    exact = len(d) <= EXACT_MAX_NONZERO
    if len(d) == 0:
        p, n = 1.0, 1
    elif exact:
        # Every sign pattern: bit j of the pattern's index flips difference j.
        patterns = np.arange(2 ** len(d))[:, None] >> np.arange(len(d))[None, :] & 1
        sums = np.abs((1 - 2 * patterns) @ d)
        n = len(sums)
        p = float((sums >= observed - tol).sum() / n)
    else:
        rng = np.random.default_rng(seed)
        hits, done, chunk = 0, 0, max(1, min(permutations, 2_000_000 // len(d)))
        while done < permutations:
            m = min(chunk, permutations - done)
            signs = 1 - 2 * rng.integers(0, 2, size=(m, len(d)), dtype=np.int8).astype(float)
            hits += int((np.abs(signs @ d) >= observed - tol).sum())
            done += m
        n = permutations
        p = (hits + 1) / (permutations + 1)
    total_words = words.sum()
    delta = 100.0 * float(diff.sum()) / total_words if total_words else float("nan")
    return {"delta": round(delta, 3), "p_value": float(min(1.0, p)), "units": int(len(diff)),
            "nonzero": int(len(d)), "exact": bool(exact), "permutations": int(n), "seed": seed}
