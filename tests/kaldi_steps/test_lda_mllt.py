"""tri2 = LDA+MLLT (issue #16) on the real AN4 slice: the LDA matrix's defining properties on the
training frames, Kaldi's matrix format (round trip of a real Kaldi ``lda.mat``), the MLLT update
raising its auxiliary function, and the stage running, resuming and being redone on a change.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import kaldiio
import numpy as np
import pytest

from tests.fixtures_gmm import TRI2_SLICE, linked_tri1_workspace
from weakalign.kaldi_steps.feature_transform import FeatureSpec, apply_transform, splice_frames
from weakalign.kaldi_steps.shard import Shard, shard_args
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_kaldi_matrix, read_model, write_kaldi_matrix
from weakalign.kaldi_steps.lang import Lang
from weakalign.kaldi_steps.lda_mllt import (LdaStats, estimate_lda, estimate_mllt, frame_weights, mllt_objective)
from weakalign.kaldi_steps.train_lda_mllt import tri2_stage
from weakalign.kaldi_steps.tree import TransitionTables
from weakalign.pipeline.io import read_json
from weakalign.pipeline.recipe import dependents, select_stages
from weakalign.pipeline.stage import is_done, run_stage, setup_console_logging

setup_console_logging()  # before the first test, so that caplog sees the stage logger


def train_shard(ws, ali_dir, transform=None) -> tuple[Shard, object, object]:
    """All of the slice's train utterances in one shard of spliced features (through ``transform``),
    with the alignments of ``ali_dir``; returns (shard, trans_model, am) of that dir's model."""
    args = shard_args(ws, "train", 1, FeatureSpec.lda(transform))[0]
    shard = Shard(*args)
    shard.set_alignments(read_ali_dir(ali_dir))
    tm, am = read_model(ali_dir / "final.mdl")
    return shard, tm, am


@pytest.fixture(scope="module")
def slice_lda(an4_slice_tri1):
    """(LDA, the LDA statistics' class of every non-silence train frame, those frames spliced)."""
    ws = an4_slice_tri1
    shard, tm, _ = train_shard(ws, ws.exp / "tri1_ali")
    silence = Lang.load(ws.lang).silence_phone_ids
    lda, _ = estimate_lda(LdaStats.merge([shard.lda_stats(tm, silence)]), 40)
    tables = TransitionTables(tm)
    utts = [u for u in shard.utt_ids if u in shard.alignments]
    ali = np.concatenate([shard.alignments[u] for u in utts])
    spliced = np.concatenate([shard.base_feats[u] for u in utts]).astype(np.float64)
    speech = frame_weights(ali, tables.phone, silence) > 0
    return lda, tables.pdf[ali][speech], spliced[speech]


def class_covariances(frames: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(within-class, between-class) covariance of ``frames``, computed directly."""
    mean = frames.mean(0)
    within = np.zeros((frames.shape[1],) * 2)
    between = np.zeros_like(within)
    for c in np.unique(classes):
        x = frames[classes == c]
        centred = x - x.mean(0)
        within += centred.T @ centred
        between += len(x) * np.outer(x.mean(0) - mean, x.mean(0) - mean)
    return within / len(frames), between / len(frames)


def test_lda_makes_the_within_class_covariance_of_the_training_frames_unit(slice_lda):
    lda, classes, spliced = slice_lda
    assert lda.matrix.shape == (40, 91) and spliced.shape[1] == 91
    within, _ = class_covariances(spliced @ lda.matrix.T, classes)
    assert np.allclose(within, np.eye(40), atol=1e-6)
    # Not so before: the spliced MFCCs' own within-class covariance is far from unit.
    raw_within, _ = class_covariances(spliced, classes)
    assert not np.allclose(raw_within, np.eye(91), atol=0.1)


def test_lda_orders_its_rows_by_between_class_variance(slice_lda):
    lda, classes, spliced = slice_lda
    _, between = class_covariances(spliced @ lda.full.T, classes)
    variances = np.diag(between)
    assert np.allclose(between, np.diag(variances), atol=1e-6)      # uncorrelated output dimensions
    assert np.allclose(variances, lda.eigenvalues, rtol=1e-6, atol=1e-9)
    assert np.all(np.diff(variances) <= 1e-9) and variances[0] > 10 * variances[39]
    # The first row is the most discriminative direction there is: no other direction, scaled to unit
    # within-class variance, has more between-class variance (the Rayleigh quotient's maximum).
    within, between_raw = class_covariances(spliced, classes)
    for direction in np.random.default_rng(0).standard_normal((20, 91)):
        direction /= np.sqrt(direction @ within @ direction)
        assert direction @ between_raw @ direction < variances[0]


def test_kaldis_lda_mat_round_trips_byte_identical(kaldi_models_dir, tmp_path):
    path = kaldi_models_dir / "acoustic_g2p_output_model" / "lda.mat"
    mat = read_kaldi_matrix(path)
    assert mat.shape == (40, 91) and mat.dtype == np.float32
    assert np.array_equal(mat, kaldiio.load_mat(str(path)))
    write_kaldi_matrix(tmp_path / "lda.mat", mat)
    assert (tmp_path / "lda.mat").read_bytes() == path.read_bytes()
    write_kaldi_matrix(tmp_path / "lda.txt", mat, binary=False)
    assert np.allclose(read_kaldi_matrix(tmp_path / "lda.txt"), mat, rtol=1e-5, atol=1e-6)


def test_tri2_writes_kaldi_matrices_that_kaldiio_reads(an4_slice_tri2):
    out = an4_slice_tri2.exp / "tri2"
    lda, final = read_kaldi_matrix(out / "lda.mat"), read_kaldi_matrix(out / "final.mat")
    assert lda.shape == final.shape == (40, 91)
    assert np.array_equal(kaldiio.load_mat(str(out / "final.mat")), final)
    assert not np.allclose(lda, final)      # MLLT changed the transform
    assert (an4_slice_tri2.exp / "tri2_ali" / "final.mat").read_bytes() == (out / "final.mat").read_bytes()
    assert (out / "splice_opts").read_text().split() == ["--left-context=3", "--right-context=3"]


def test_splicing_and_transform_are_kaldis():
    feats = np.arange(8.0).reshape(4, 2)
    spliced = splice_frames(feats, 1)
    assert spliced[0].tolist() == [0, 1, 0, 1, 2, 3] and spliced[3].tolist() == [4, 5, 6, 7, 6, 7]
    with_offset = np.hstack([np.eye(6)[:2], [[10.0], [20.0]]])
    assert apply_transform(spliced, with_offset)[:, 0].tolist() == (spliced[:, 0] + 10).tolist()


def test_each_mllt_update_of_the_run_raised_its_objective(an4_slice_tri2):
    diagnostics = read_json(an4_slice_tri2.exp / "tri2" / "diagnostics.json")
    updates = diagnostics["mllt"]
    assert [u["iter"] for u in updates] == list(TRI2_SLICE["mllt_iters"])
    for update in updates:
        assert update["objf_after"] > update["objf_before"] and update["objf_impr_per_frame"] > 0
    marked = {h["iter"]: h["mllt_objf_impr_per_frame"] for h in diagnostics["iterations"] if "mllt_objf_impr_per_frame" in h}
    assert marked == {u["iter"]: u["objf_impr_per_frame"] for u in updates}
    assert diagnostics["lda"]["dim"] == 40 and diagnostics["lda"]["input_dim"] == 91


def test_mllt_update_maximises_its_auxiliary_function_on_the_slice(an4_slice_tri2):
    """MLLT statistics of tri2's final model on its own features (final.mat): the update raises the
    objective over the identity (the features as they are), and is a maximum: no nearby transform,
    nor the update rescaled, does better."""
    ws = an4_slice_tri2
    shard, tm, am = train_shard(ws, ws.exp / "tri2_ali", read_kaldi_matrix(ws.exp / "tri2_ali" / "final.mat"))
    stats = shard.mllt_stats(tm, am, Lang.load(ws.lang).silence_phone_ids)
    assert stats.beta > 10 * 40
    transform, info = estimate_mllt(stats)
    assert info["objf_after"] > info["objf_before"] == pytest.approx(mllt_objective(np.eye(40), stats))
    rng = np.random.default_rng(0)
    for _ in range(5):
        nearby = transform + 1e-3 * rng.standard_normal(transform.shape)
        assert mllt_objective(nearby, stats) < info["objf_after"]
    for scale in (0.9, 1.1):
        assert mllt_objective(scale * transform, stats) < info["objf_after"]


def test_tri2_stage_runs_and_a_rerun_of_the_same_request_is_already_done(an4_slice_tri2, caplog):
    ws = an4_slice_tri2
    done = read_json(ws.done_dir / "tri2.json")["summary"]
    assert done["num_pdfs"] > 40 and done["failed"] == 0 and done["aligned"] == done["utterances"]
    assert list(read_json(ws.exp / "tri2_ali" / "splits.json")) == ["train", "dev", "test"]
    model = (ws.exp / "tri2" / "final.mdl").read_bytes()
    caplog.clear()
    assert run_stage("tri2", ws, tri2_stage, nj=1, **TRI2_SLICE) == done     # fewer jobs: the same request
    assert "[an4] tri2: already done with these options" in caplog.text
    assert (ws.exp / "tri2" / "final.mdl").read_bytes() == model and is_done(ws, "tri2")


def test_tri2_without_mllt_is_lda_only(an4_slice_tri1, an4_slice_tri2, tmp_path):
    """``mllt_iters=()``: final.mat is lda.mat, and that LDA is the one of the run with MLLT (it is
    estimated from tri1's alignments only, before anything MLLT changes)."""
    ws = linked_tri1_workspace(an4_slice_tri1, tmp_path)
    # Two iterations, train only: the LDA is estimated before any of them (kept short for the suite).
    run_stage("tri2", ws, tri2_stage, nj=2, **{**TRI2_SLICE, "mllt_iters": (), "num_iters": 2,
                                               "align_splits": ("train",)})
    assert read_json(ws.done_dir / "tri2.json")["options"]["mllt_iters"] == []
    assert read_json(ws.exp / "tri2" / "diagnostics.json")["mllt"] == []
    out = ws.exp / "tri2"
    assert (out / "final.mat").read_bytes() == (out / "lda.mat").read_bytes()
    assert (out / "lda.mat").read_bytes() == (an4_slice_tri2.exp / "tri2" / "lda.mat").read_bytes()


def test_tri2_is_opt_in_and_goes_stale_with_tri1():
    assert "tri2" not in select_stages(None, None)
    assert select_stages(None, "tri2")[-2:] == ["tri1", "tri2"]
    assert select_stages("tri2", None) == ["tri2", "hybrid", "export"]
    assert "tri2" in dependents("tri1") and dependents("tri2") == ["tri3"]
