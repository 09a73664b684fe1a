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
    assert reasons["too-short"].startswith("too short")


def test_every_config_uses_the_ali_cuts_once_they_exist(an4_slice, an4_standin_ali):
    assert training_cuts_source(an4_slice) == "fbank"
    assert training_cuts_source(an4_standin_ali) == "ali"
    assert cuts_path(an4_standin_ali, "train") == an4_standin_ali.ali_cuts("train")


def test_standin_labels_are_stored_exactly(an4_standin_ali):
    cut = next(iter(load_manifest(an4_standin_ali.ali_cuts("dev"))))
    labels = cut.load_senone()
    assert labels.dtype == np.int64 and len(labels) == cut.num_frames
    assert len(set(labels.tolist())) > 1
