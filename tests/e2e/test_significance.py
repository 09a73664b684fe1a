"""Bootstrap intervals and the paired bootstrap test on a realistic set: AN4's 130 test transcripts.

System outputs are made by injecting word errors into the real reference texts
with a seeded generator (the point is the statistics, not a model).
"""

import random

import kaldialign
import pytest

from weakalign.e2e.scoring import score_set
from weakalign.e2e.significance import bootstrap_ci, paired_bootstrap_test


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
