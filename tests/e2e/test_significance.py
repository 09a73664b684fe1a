"""Bootstrap intervals and the paired bootstrap test on a realistic set: AN4's 130 test transcripts.

System outputs are made by injecting word errors into the real reference texts
with a seeded generator (the point is the statistics, not a model).
"""

import random

import math

import kaldialign
import numpy as np
import pytest

from weakalign.e2e.scoring import score_set
from weakalign.e2e.significance import bootstrap_ci, paired_bootstrap_test, paired_permutation_test


@pytest.fixture(scope="module")
def an4_test_refs(corpora_dir):
    refs = {}
    for line in (corpora_dir / "an4" / "etc" / "an4_test.transcription").read_text().splitlines():
        text, utt = line.rsplit("(", 1)
        refs[utt.rstrip(")")] = " ".join(w for w in text.split() if w not in ("<s>", "</s>"))
    assert len(refs) == 130
    return refs


VOCAB = "A B C D E F G H ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE ENTER ERASE RUBOUT".split()


def inject_errors(refs: dict, share: float, seed: int, per_utt: int = 2) -> dict:
    """Corrupt ``share`` of the utterances: ``per_utt`` substitutions/deletions each."""
    rng = random.Random(seed)
    hyps = dict(refs)
    for utt in rng.sample(sorted(refs), round(share * len(refs))):
        words = refs[utt].split()
        for _ in range(per_utt):
            if not words:
                break
            i = rng.randrange(len(words))
            if rng.random() < 0.5:
                words[i] = rng.choice([w for w in VOCAB if w != words[i]])
            else:
                del words[i]
        hyps[utt] = " ".join(words)
    return hyps


def errors_and_words(refs, hyps, utts):
    s = score_set({u: refs[u] for u in utts}, {u: hyps[u] for u in utts})
    return [s.per_utt[u].err for u in utts], [s.per_utt[u].words for u in utts]


def test_identical_systems_give_p_one(an4_test_refs):
    utts = sorted(an4_test_refs)
    hyps = inject_errors(an4_test_refs, 0.3, seed=1)
    e, w = errors_and_words(an4_test_refs, hyps, utts)
    result = paired_bootstrap_test(e, list(e), w, replicas=2000, seed=0)
    assert result["p_value"] == pytest.approx(1.0)
    assert result["delta"] == 0.0


def test_errors_in_20_percent_of_utterances_are_significant(an4_test_refs):
    utts = sorted(an4_test_refs)
    base = inject_errors(an4_test_refs, 0.3, seed=1)
    worse = inject_errors(base, 0.2, seed=2)
    ea, w = errors_and_words(an4_test_refs, base, utts)
    eb, _ = errors_and_words(an4_test_refs, worse, utts)
    assert sum(eb) > sum(ea)
    result = paired_bootstrap_test(ea, eb, w, replicas=2000, seed=0)
    assert result["p_value"] < 0.05
    assert result["delta"] > 0 and result["ci95"][0] > 0
    # Symmetric: swapping the systems flips the sign, not the p-value.
    swapped = paired_bootstrap_test(eb, ea, w, replicas=2000, seed=0)
    assert swapped["delta"] == pytest.approx(-result["delta"])
    assert swapped["p_value"] == pytest.approx(result["p_value"])
    # A tiny difference (one utterance) is not significant.
    one = dict(base)
    changed = next(u for u in utts if base[u] == an4_test_refs[u])
    one[changed] = an4_test_refs[changed] + " SEVEN"
    ec, _ = errors_and_words(an4_test_refs, one, utts)
    assert paired_bootstrap_test(ea, ec, w, replicas=2000, seed=0)["p_value"] > 0.2


def test_ci_contains_wer_is_seeded_and_agrees_with_kaldialign(an4_test_refs):
    utts = sorted(an4_test_refs)
    hyps = inject_errors(an4_test_refs, 0.3, seed=3)
    e, w = errors_and_words(an4_test_refs, hyps, utts)
    ci = bootstrap_ci(e, w, replicas=2000, seed=7)
    lo, hi = ci["ci95"]
    assert lo < ci["wer"] < hi
    assert bootstrap_ci(e, w, replicas=2000, seed=7) == ci
    ref = kaldialign.bootstrap_wer_ci([an4_test_refs[u].split() for u in utts], [hyps[u].split() for u in utts],
                                      replications=2000, seed=7)
    width = hi - lo
    assert abs(100 * ref["ci95min"] - lo) < 0.25 * width
    assert abs(100 * ref["ci95max"] - hi) < 0.25 * width


def test_ci_widens_when_the_set_is_subsampled(an4_test_refs):
    utts = sorted(an4_test_refs)
    hyps = inject_errors(an4_test_refs, 0.3, seed=4)
    e, w = errors_and_words(an4_test_refs, hyps, utts)
    full = bootstrap_ci(e, w, replicas=2000, seed=0)["ci95"]
    rng = random.Random(0)
    sub = sorted(rng.sample(range(len(utts)), 30))
    small = bootstrap_ci([e[i] for i in sub], [w[i] for i in sub], replicas=2000, seed=0)["ci95"]
    assert small[1] - small[0] > 1.4 * (full[1] - full[0])


# ---------------------------------------------------------------- paired permutation (sign-flip) test

def test_permutation_identical_systems_give_p_one():
    rng = np.random.default_rng(0)
    errors = rng.integers(0, 4, size=300)
    words = rng.integers(1, 9, size=300)
    result = paired_permutation_test(errors, errors.copy(), words)
    assert result["p_value"] == 1.0 and result["delta"] == 0.0 and result["nonzero"] == 0


def test_permutation_exact_on_small_known_cases():
    # Differences (1, 1, 1, -1): sum = 4 - 2j for j minus signs; |sum| >= 2 unless j = 2: 10 of 16 patterns.
    assert paired_permutation_test([0, 0, 0, 1], [1, 1, 1, 0], [3, 3, 3, 3])["p_value"] == pytest.approx(10 / 16)
    r = paired_permutation_test([0] * 5, [1] * 5, [4] * 5)
    assert r["exact"] and r["p_value"] == pytest.approx(2 / 32) and r["delta"] == 25.0
    # Zero differences do not count as units that can flip.
    assert paired_permutation_test([0] * 50 + [0] * 5, [0] * 50 + [1] * 5, [4] * 55)["p_value"] == pytest.approx(2 / 32)


def test_permutation_random_flips_match_the_binomial_answer():
    # 12 differences of +1 and 8 of -1 (20 non-zero: random flips). |sum| = |20 - 2j|, j ~ Binomial(20, 1/2).
    known = 2 * sum(math.comb(20, j) for j in range(9)) / 2 ** 20
    ea, eb = [1] * 8 + [0] * 12, [0] * 8 + [1] * 12
    r = paired_permutation_test(ea, eb, [5] * 20, permutations=20000, seed=3)
    assert not r["exact"] and r["permutations"] == 20000
    assert r["p_value"] == pytest.approx(known, abs=0.015)
    assert paired_permutation_test(ea, eb, [5] * 20, permutations=20000, seed=3) == r  # seeded


def test_permutation_systematic_difference_and_pooled_seeds(an4_test_refs):
    utts = sorted(an4_test_refs)
    base = inject_errors(an4_test_refs, 0.3, seed=1)
    worse = inject_errors(base, 0.2, seed=2)
    ea, w = errors_and_words(an4_test_refs, base, utts)
    eb, _ = errors_and_words(an4_test_refs, worse, utts)
    r = paired_permutation_test(ea, eb, w, permutations=5000)
    assert r["p_value"] < 0.01 and r["delta"] > 0
    assert paired_permutation_test(eb, ea, w, permutations=5000)["p_value"] == pytest.approx(r["p_value"])
    # Pooled over three seed pairs (units = utterance x seed pair, words repeated per pair): errors
    # added to 10% of the utterances of every seed's run are significant.
    pooled_a, pooled_b, pooled_w = [], [], []
    for seed in (1, 2, 3):
        a = inject_errors(an4_test_refs, 0.3, seed=10 + seed)
        b = inject_errors(a, 0.1, seed=20 + seed)
        pooled_a += errors_and_words(an4_test_refs, a, utts)[0]
        pooled_b += errors_and_words(an4_test_refs, b, utts)[0]
        pooled_w += w
    pooled = paired_permutation_test(pooled_a, pooled_b, pooled_w, permutations=5000)
    assert pooled["units"] == 3 * len(utts) and pooled["p_value"] < 0.01
    with pytest.raises(ValueError, match="same units"):
        paired_permutation_test([0, 1], [0], [1, 1])
