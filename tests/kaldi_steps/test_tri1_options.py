"""``tri1 --num-leaves`` is part of the stage's identity (issue #19, items 1 and 4), on the real
AN4 slice: the same request is "already done", another number of leaves retrains the tree.

It trains tri1 twice (~1.5 s each) in its own workspace, on links to the session slice's
features, lang and mono (the slice itself stays read-only).
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import os

from tests.fixtures_gmm import TRI1_SLICE
from weakalign.kaldi_steps.train_deltas import tri1_stage
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
