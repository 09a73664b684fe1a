"""The GMM benchmarks (weakalign.kaldi_steps.benchmarks) run on what the stages wrote.

Figures are measured by ``make bench``, never asserted; here only that each system is aligned
on its own features and tree, as its stage aligned it.
"""

import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst


def test_gmm_systems_aligns_every_utterance_with_each_systems_features_and_tree(an4_slice_tri3):
    """mono and tri1 on Δ+ΔΔ (39 dims), tri2 and tri3 on the LDA+MLLT features (40), tri3 also
    through align_fmllr.sh's passes; every utterance aligned by every system, tri3's stage time
    read from its marker."""
    from weakalign.kaldi_steps.benchmarks import MAX_UTTS, bench_gmm_systems

    out = bench_gmm_systems(an4_slice_tri3, nj=1)
    systems = out["systems"]
    assert list(systems) == ["mono", "tri1", "tri2", "tri3"] and out["absent"] == []
    assert {name: s["feature_dim"] for name, s in systems.items()} == {"mono": 39, "tri1": 39, "tri2": 40, "tri3": 40}
    assert 0 < out["utterances"] <= MAX_UTTS
    for name, s in systems.items():
        assert s["aligned"] == out["utterances"] and s["frames"] > 0 and s["align_frames_per_s"] > 0, name
    assert systems["tri3"]["align_fmllr_frames_per_s"] > 0
    assert systems["tri3"]["stage_seconds"] > 0
