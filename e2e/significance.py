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

``kaldialign.bootstrap_wer_ci`` does the same resampling in C++ but gives a
normal-approximation interval and a one-sided probability of improvement; the
tests check our interval against it.

>>> errors, words = [0, 1, 2, 0], [3, 4, 5, 2]
>>> lo, hi = bootstrap_ci(errors, words, replicas=2000, seed=1)["ci95"]
>>> lo <= 100 * 3 / 14 <= hi
True
>>> paired_bootstrap_test(errors, errors, words)["p_value"]
1.0
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
