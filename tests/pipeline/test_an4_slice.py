"""What the ``an4_slice`` fixture promises the other packages' tests."""

from lhotse import SupervisionSet

from weakalign.pipeline.stage import is_done


def test_slice_sizes_speakers_and_disjoint_dev(an4_slice):
    sups = {split: SupervisionSet.from_file(an4_slice.manifest("supervisions", split))
            for split in ("train", "dev", "test")}
    speakers = {split: {s.speaker for s in ss} for split, ss in sups.items()}
    assert len(sups["train"]) == 60 and len(speakers["train"]) >= 6
    assert len(sups["dev"]) == 12 and len(speakers["dev"]) == 2
    assert len(sups["test"]) == 12
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    for s in sups["train"]:
        assert s.text and s.text == s.text.upper() and "<S>" not in s.text
    assert is_done(an4_slice, "prepare") and is_done(an4_slice, "features")
