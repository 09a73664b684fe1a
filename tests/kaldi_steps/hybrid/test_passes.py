"""The ``hybrid`` stage's passes on the AN4 slice: a second pass trains on the first one's realignment,
a finished pass is reused unless its source changed, and ``--warm-start`` starts later passes from the
previous network. (Apart from ``test_stage.py`` so that ``make test``'s processes run the two in parallel.)"""

import json
import shutil

import numpy as np
import pytest
from lhotse import CutSet

from weakalign.kaldi_steps.hybrid.realign import tid2pdf_array
from weakalign.kaldi_steps.hybrid.stage import hybrid_stage
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
from weakalign.pipeline.io import read_json
from weakalign.pipeline.stage import run_stage
from weakalign.pipeline.workspace import Workspace

from .test_stage import TINY


@pytest.fixture(scope="module")
def two_pass_ws(an4_slice_tri1, tmp_path_factory):
    src = an4_slice_tri1
    ws = Workspace(src.corpus, data_root=src.data_root, exp_root=tmp_path_factory.mktemp("hybrid_2pass"))
    for name in ("tri1", "tri1_ali"):
        shutil.copytree(src.exp / name, ws.exp / name)
    opts = {**TINY, "passes": 2, "epochs": 3, "decode": False, "speed_perturb": [1.1]}
    return ws, opts, run_stage("hybrid", ws, hybrid_stage, nj=2, device="cpu", **opts)


def test_second_pass_trains_on_the_first_pass_realignment(two_pass_ws):
    ws, _, summary = two_pass_ws
    first = json.loads((ws.exp / "hybrid_pass1" / "diagnostics.json").read_text())
    last = json.loads((ws.exp / "hybrid" / "diagnostics.json").read_text())
    assert (first["pass"], first["source"], first["speed_perturb"]) == (1, "tri1_ali", [1.1])
    assert (last["pass"], last["source"]) == (2, "hybrid_ali_pass1")
    trans_model, _ = read_model(ws.exp / "tri1_ali" / "final.mdl")
    tid2pdf = tid2pdf_array(trans_model)
    pass1 = read_ali_dir(ws.exp / "hybrid_ali_pass1")
    # pass 2's priors count pass 1's senones, not tri1's
    counts = np.load(ws.exp / "hybrid" / "pdf_counts.npy")
    train_utts = {c.id for c in CutSet.from_file(ws.fbank_cuts("train"))}
    expected = np.bincount(np.concatenate([tid2pdf[a] for u, a in pass1.items() if u in train_utts]),
                           minlength=trans_model.num_pdfs)
    assert np.array_equal(counts, expected)
    # every pass's realignment is its own, and the report keeps both passes
    final = read_ali_dir(ws.exp / "hybrid_ali")
    assert any(not np.array_equal(a, pass1[u]) for u, a in final.items() if u in pass1)
    assert len(summary["passes"]) == 2 and summary["agreement_with_tri1"] == last["agreement_with_tri1"]
    assert last["agreement_with_source"] != last["agreement_with_tri1"]


def test_rerun_reuses_a_finished_pass_unless_its_source_changed(two_pass_ws):
    ws, opts, summary = two_pass_ws
    pass1_model = ws.exp / "hybrid_pass1" / "final.pt"
    before = pass1_model.stat().st_mtime_ns
    rerun = run_stage("hybrid", ws, hybrid_stage, force=True, nj=2, device="cpu", **opts)
    assert pass1_model.stat().st_mtime_ns == before                  # pass 1 reused
    assert rerun["passes"][0] == summary["passes"][0]
    # other source alignments or other options: the finished pass no longer counts
    from weakalign.kaldi_steps.hybrid.stage import _finished_pass, alignment_digest
    stamp = json.loads((ws.exp / "hybrid_pass1" / "diagnostics.json").read_text())["pass_stamp"]
    assert stamp["source_digest"] == alignment_digest(read_ali_dir(ws.exp / "tri1_ali"))
    assert _finished_pass(ws.exp / "hybrid_pass1", {**stamp, "source_digest": "other"}) is None
    assert _finished_pass(ws.exp / "hybrid_pass1", {**stamp, "options": {**stamp["options"], "seed": 7}}) is None
    assert _finished_pass(ws.exp / "hybrid_pass1", stamp)["aligned"] == first_pass_aligned(ws)


def first_pass_aligned(ws) -> int:
    return len(read_ali_dir(ws.exp / "hybrid_ali_pass1"))


def test_warm_start_trains_later_passes_from_the_previous_network(two_pass_ws, tmp_path):
    """--warm-start --later-epochs 1 (issue #17): pass 1 as before (reused), pass 2 one epoch from pass 1's weights."""
    ws, opts, _ = two_pass_ws
    warm = Workspace(ws.corpus, data_root=ws.data_root, exp_root=tmp_path / "exp")
    shutil.copytree(ws.exp, warm.exp)
    before = (warm.exp / "hybrid_pass1" / "final.pt").stat().st_mtime_ns
    run_stage("hybrid", warm, hybrid_stage, force=True, nj=2, device="cpu",
              **{**opts, "warm_start": True, "later_epochs": 1})
    assert (warm.exp / "hybrid_pass1" / "final.pt").stat().st_mtime_ns == before      # pass 1 is the same pass
    last = read_json(warm.exp / "hybrid" / "diagnostics.json")
    assert last["warm_start_from"] == str(warm.exp / "hybrid_pass1" / "final.pt")
    assert last["epochs_run"] == 1 and last["train_config"]["epochs"] == 1
    assert last["pass_stamp"]["warm_start_from"] == "hybrid_pass1"
    # It fine-tunes at the rate pass 1 ended on, not at a fresh run's first rate.
    first = read_json(warm.exp / "hybrid_pass1" / "diagnostics.json")["train_config"]
    assert last["train_config"]["lr"] == last["train_config"]["lr_final"] == first["lr_final"] < first["lr"]
    # A fresh pass 2 starts near chance; the warm one starts from a network that already fits tri1's
    # senones, so its first epoch ends with a far lower train loss than the fresh run's first epoch.
    fresh = read_json(ws.exp / "hybrid" / "diagnostics.json")["history"][0]["train_loss"]
    assert last["history"][0]["train_loss"] < fresh - 0.3
