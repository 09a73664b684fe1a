"""Batches from real AN4 cuts: the interface's batch dict, senone labels, skipped cuts, cut source."""

import numpy as np
import torch
from lhotse import CutSet, load_manifest

from weakalign.e2e.data import (AsrDataset, count_senones, cut_text, cuts_path, make_loader,
                                training_cuts_source, usable_cuts)
from weakalign.e2e.tokenizer import train_bpe
from weakalign.pipeline.report import SkipReport

from .standin_alignments import NUM_STANDIN_SENONES, an4_standin_ali, standin_labels  # noqa: F401


def test_batches_follow_the_interface(an4_standin_ali, tmp_path):
    cuts = load_manifest(an4_standin_ali.ali_cuts("train"))
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path / "bpe.model", 40)
    loader, sampler = make_loader(cuts, tok, max_duration=20.0, shuffle=True, seed=3)
    sampler.set_epoch(1)
    seen = []
    for batch in loader:
        B = len(batch["cut_ids"])
        assert batch["feats"].shape == (B, int(batch["feat_lens"].max()), 80)
        assert batch["senone"].shape == batch["feats"].shape[:2]
        assert batch["senone"].dtype == torch.long
        for i, cid in enumerate(batch["cut_ids"]):
            cut = cuts[cid]
            n = int(batch["feat_lens"][i])
            assert n == cut.num_frames
            assert np.array_equal(batch["feats"][i, :n].numpy(), cut.load_features())
            assert batch["feats"][i, n:].abs().sum() == 0
            stored = cut.load_senone()
            assert np.array_equal(batch["senone"][i, :n].numpy(), stored)
            assert (batch["senone"][i, n:] == -100).all()
            assert batch["texts"][i] == cut.supervisions[0].text
            assert tok.decode(batch["tokens"][i]) == batch["texts"][i]
        assert sum(c.duration for c in cuts.subset(cut_ids=batch["cut_ids"])) <= 20.0
        seen += batch["cut_ids"]
    assert sorted(seen) == sorted(cuts.ids)          # one epoch visits every cut once
    assert count_senones(cuts) <= NUM_STANDIN_SENONES


def test_fbank_cuts_give_no_senone_key(an4_slice, tmp_path):
    cuts = load_manifest(an4_slice.fbank_cuts("dev"))
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path / "bpe.model", 30)
    batch = AsrDataset(tok)[cuts.subset(first=3)]
    assert "senone" not in batch and len(batch["cut_ids"]) == 3


def test_unusable_cuts_are_skipped_and_counted(an4_slice, tmp_path):
    cuts = list(load_manifest(an4_slice.fbank_cuts("dev")))
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path / "bpe.model", 30)
    empty = cuts[0].with_id("empty-text")
    empty.supervisions = [s.with_text(" ") if hasattr(s, "with_text") else s for s in empty.supervisions]
    empty.supervisions[0].text = " "
    short = cuts[1].truncate(duration=0.05).with_id("too-short")
    report = SkipReport("train")
    kept = usable_cuts(CutSet.from_cuts(cuts[2:] + [empty, short]), tok, report)
    assert len(kept) == len(cuts) - 2
    assert report.count == 2
    reasons = dict(report.items)
    assert reasons["empty-text"] == "empty transcript"
    assert reasons["too-short"].startswith("too short: ")


def test_cuts_without_features_or_with_more_tokens_than_encoder_frames_are_skipped(an4_slice, tmp_path):
    cuts = list(load_manifest(an4_slice.fbank_cuts("dev")))
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path / "bpe.model", 30)
    no_feats = cuts[0].drop_features().with_id("no-feats")
    # 0.3 s = ~30 frames = 7 encoder frames after x4 subsampling, for a transcript of many more tokens.
    long_text = cuts[1].truncate(duration=0.3).with_id("long-text")
    long_text.supervisions[0].text = " ".join(cut_text(c) for c in cuts[2:6])
    report = SkipReport("train")
    kept = usable_cuts(CutSet.from_cuts(cuts[2:] + [no_feats, long_text]), tok, report)
    assert sorted(kept.ids) == sorted(c.id for c in cuts[2:])
    reasons = dict(report.items)
    assert reasons["no-feats"] == "no features"
    assert reasons["long-text"].startswith("too short for CTC: ")
    n_tokens = len(tok.encode(long_text.supervisions[0].text))
    assert f"{n_tokens} tokens > " in reasons["long-text"]


def test_every_config_uses_the_ali_cuts_once_they_exist(an4_slice, an4_standin_ali):
    assert training_cuts_source(an4_slice) == "fbank"
    assert training_cuts_source(an4_standin_ali) == "ali"
    assert cuts_path(an4_standin_ali, "train") == an4_standin_ali.ali_cuts("train")


def test_standin_labels_are_stored_exactly(an4_standin_ali):
    cut = next(iter(load_manifest(an4_standin_ali.ali_cuts("dev"))))
    labels = cut.load_senone()
    assert labels.dtype == np.int64 and len(labels) == cut.num_frames
    assert len(set(labels.tolist())) > 1


def test_senone_labels_off_by_a_frame_are_fitted_and_further_off_refused(an4_slice, tmp_path):
    from lhotse.features.io import NumpyFilesWriter

    from weakalign.e2e.data import MAX_FRAME_MISMATCH

    cut = next(iter(load_manifest(an4_slice.fbank_cuts("dev"))))
    n = cut.num_frames
    labels = {"longer": np.arange(n + 1) % 7, "shorter": np.arange(n - 1) % 7,
              "far-off": np.arange(n - MAX_FRAME_MISMATCH - 1) % 7}
    with NumpyFilesWriter(tmp_path / "senones") as writer:
        cuts = {name: cut.with_id(name).with_custom(
                    "senone", writer.store_array(name, lab.astype(np.int64), frame_shift=0.01, temporal_dim=0))
                for name, lab in labels.items()}
    fitted = {name: AsrDataset._senone(cuts[name], n) for name in ("longer", "shorter")}
    assert np.array_equal(fitted["longer"], labels["longer"][:n])
    assert np.array_equal(fitted["shorter"], np.append(labels["shorter"], labels["shorter"][-1]))
    with np.testing.assert_raises_regex(ValueError, f"far-off: senone alignment has {n - MAX_FRAME_MISMATCH - 1} "
                                                    f"frames, features {n}"):
        AsrDataset._senone(cuts["far-off"], n)
