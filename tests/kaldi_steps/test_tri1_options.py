"""``tri1 --num-leaves`` is part of the stage's identity (issue #19, items 1 and 4), on the real
AN4 slice: the same request is "already done", another number of leaves retrains the tree. And
which splits tri1 aligns (issue #18): test after dev, without any effect on the model, and a
test split it has not aligned yet redoes it.

Each test trains tri1 a few times (~1.5 s each) in its own workspace, on links to the session
slice's features, lang and mono (the slice itself stays read-only).
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import os

import numpy as np
from lhotse import CutSet

from tests.fixtures_gmm import TRI1_SLICE
from weakalign.kaldi_steps.kaldi_io import read_ali_dir
from weakalign.kaldi_steps.train_deltas import read_utt2split, tri1_stage
from weakalign.pipeline.io import read_json, write_json
from weakalign.pipeline.stage import run_stage, setup_console_logging
from weakalign.pipeline.workspace import Workspace

setup_console_logging()  # before the first test, so that caplog sees the stage logger


def linked_gmm_workspace(src: Workspace, root) -> Workspace:
    ws = Workspace(src.corpus, data_root=root / "data", exp_root=root / "exp")
    ws.data.mkdir(parents=True)
    ws.exp.mkdir(parents=True)
    for name in ("manifests", "mfcc", "lang"):
        os.symlink(src.data / name, ws.data / name)
    os.symlink(src.exp / "mono", ws.exp / "mono")
    return ws


def test_tri1_retrains_for_another_number_of_leaves_and_only_then(an4_slice_tri1, tmp_path, caplog):
    ws = linked_gmm_workspace(an4_slice_tri1, tmp_path)
    first = run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    assert run_stage("tri1", ws, tri1_stage, nj=1, **TRI1_SLICE) == first      # fewer jobs: the same request
    assert "[an4] tri1: already done with these options" in caplog.text
    caplog.clear()
    fewer = run_stage("tri1", ws, tri1_stage, nj=2, **{**TRI1_SLICE, "num_leaves": 40})
    assert [r.getMessage() for r in caplog.records if "request differs" in r.getMessage()] == [
        "[an4] tri1: the request differs from the finished run, redoing it: num_leaves: 120 -> 40"]
    assert fewer["num_pdfs"] <= 40 < first["num_pdfs"]


def test_tri1_records_the_corpus_default_size_it_ran_with_and_asking_for_it_redoes_nothing(
        an4_slice_tri1, tmp_path, caplog):
    """``num_leaves`` and ``total_gauss`` default to the corpus's (AN4: 300 and 2000): the marker records
    those values, so ``--num-leaves 300`` after a default run is "already done", and a change names them."""
    from weakalign.kaldi_steps.train_deltas import DEFAULT_GAUSS, DEFAULT_LEAVES

    ws = linked_gmm_workspace(an4_slice_tri1, tmp_path)
    default_size = {k: v for k, v in TRI1_SLICE.items() if k not in ("num_leaves", "total_gauss")}
    first = run_stage("tri1", ws, tri1_stage, nj=2, **default_size)
    options = read_json(ws.done_dir / "tri1.json")["options"]
    assert (options["num_leaves"], options["total_gauss"]) == (DEFAULT_LEAVES["an4"], DEFAULT_GAUSS["an4"]) == (300, 2000)
    caplog.clear()
    assert run_stage("tri1", ws, tri1_stage, nj=2, **default_size, num_leaves=300, total_gauss=2000) == first
    assert "[an4] tri1: already done with these options" in caplog.text
    caplog.clear()
    run_stage("tri1", ws, tri1_stage, nj=2, **default_size, num_leaves=40)
    assert [r.getMessage() for r in caplog.records if "request differs" in r.getMessage()] == [
        "[an4] tri1: the request differs from the finished run, redoing it: num_leaves: 300 -> 40"]


def test_test_split_is_aligned_after_dev_without_changing_the_model(an4_slice_tri1, tmp_path):
    """Issue #18: tri1_ali holds test as jobs after dev's; no test alignment reaches training: the
    model and tree are byte for byte those of a run that aligns train and dev only."""
    with_test = an4_slice_tri1.exp / "tri1_ali"
    splits = read_json(with_test / "splits.json")
    assert list(splits) == ["train", "dev", "test"]
    assert splits["test"]["jobs"] == list(range(splits["dev"]["jobs"][-1] + 1,
                                                int((with_test / "num_jobs").read_text()) + 1))
    test_ids = set(CutSet.from_file(an4_slice_tri1.mfcc_cuts("test")).ids)
    split_of = read_utt2split(with_test)
    assert {u for u, s in split_of.items() if s == "test"} <= test_ids
    assert sum(s == "test" for s in split_of.values()) == splits["test"]["aligned"] >= len(test_ids) - 1

    ws = linked_gmm_workspace(an4_slice_tri1, tmp_path)
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE, align_splits=("train", "dev"))
    without_test = ws.exp / "tri1_ali"
    assert list(read_json(without_test / "splits.json")) == ["train", "dev"]
    assert test_ids.isdisjoint(read_ali_dir(without_test))
    for name in ("final.mdl", "tree"):
        assert (without_test / name).read_bytes() == (with_test / name).read_bytes(), name
        assert (ws.exp / "tri1" / name).read_bytes() == (an4_slice_tri1.exp / "tri1" / name).read_bytes(), name
    train_alis = {u: a for u, a in read_ali_dir(with_test).items() if split_of[u] != "test"}
    assert train_alis.keys() == read_ali_dir(without_test).keys()
    assert all(np.array_equal(a, read_ali_dir(without_test)[u]) for u, a in train_alis.items())


def linked_split_workspace(src: Workspace, root, splits) -> Workspace:
    """:func:`linked_gmm_workspace` whose prepared splits are only ``splits`` (their manifests
    linked one by one), as a workspace before ``add-split`` added test."""
    ws = linked_gmm_workspace(src, root)
    (ws.data / "manifests").unlink()
    (ws.data / "manifests").mkdir()
    for split in splits:
        add_manifests(src, ws, split)
    return ws


def add_manifests(src: Workspace, ws: Workspace, split: str) -> None:
    for kind in ("recordings", "supervisions"):
        os.symlink(src.manifest(kind, split), ws.manifest(kind, split))


def test_a_test_split_tri1_has_not_aligned_redoes_it_and_says_why(an4_slice_tri1, tmp_path, caplog):
    """A workspace whose tri1 ran before the test split was there (``add-split`` added it since), or
    before test was aligned at all (a marker with no ``aligned_splits``): the next request redoes
    tri1, one log line naming the change, and tri1_ali then holds test."""
    ws = linked_split_workspace(an4_slice_tri1, tmp_path, ("train", "dev"))
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    assert read_json(ws.done_dir / "tri1.json")["inputs"] == {"aligned_splits": "train,dev"}
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    assert "[an4] tri1: already done with these options" in caplog.text

    add_manifests(an4_slice_tri1, ws, "test")   # what add-split leaves: test's manifests and features
    caplog.clear()
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    assert redone_because(caplog) == ["aligned_splits: train,dev -> train,dev,test"]
    assert list(read_json(ws.exp / "tri1_ali" / "splits.json")) == ["train", "dev", "test"]

    marker = read_json(ws.done_dir / "tri1.json")   # as a marker written before tri1 aligned test
    write_json(ws.done_dir / "tri1.json", {**marker, "inputs": {}})
    caplog.clear()
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    assert redone_because(caplog) == ["aligned_splits: (not recorded) -> train,dev,test"]


def redone_because(caplog) -> list[str]:
    prefix = "[an4] tri1: the request differs from the finished run, redoing it: "
    return [r.getMessage()[len(prefix):] for r in caplog.records if r.getMessage().startswith(prefix)]
