"""tri3 = SAT with fMLLR (issue #16) on the real AN4 slice: the row-by-row fMLLR update raising its
auxiliary function, a speaker's transform raising its own data's log-likelihood, the identity without
data, Kaldi's ``trans.JOB`` archives, and the stage running and resuming.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import kaldiio
import numpy as np
import pytest

from tests.fixtures_gmm import TRI3_SLICE
from weakalign.kaldi_steps.fmllr import (FmllrStats, accumulate_fmllr_stats, apply_fmllr, compose_affine,
                                         estimate_fmllr, fmllr_objective, identity_transform,
                                         read_trans_archive, update_row, write_trans_archive)
from weakalign.kaldi_steps.diag_gmm import GmmParams
from weakalign.kaldi_steps.shard import Shard, shard_args
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
from weakalign.kaldi_steps.lang import Lang
from weakalign.kaldi_steps.train_sat import si_features, tri3_stage
from weakalign.kaldi_steps.tree import TransitionTables
from weakalign.pipeline.io import read_json
from weakalign.pipeline.recipe import dependents, select_stages
from weakalign.pipeline.stage import is_done, run_stage, setup_console_logging

setup_console_logging()  # before the first test, so that caplog sees the stage logger


@pytest.fixture(scope="module")
def tri2_speakers(an4_slice_tri2):
    """(shard of the slice's train utterances on tri2's SI features with tri2's alignments, tri2's
    trans model, am, each speaker's fMLLR statistics with silence weighted 0)."""
    ws = an4_slice_tri2
    src = ws.exp / "tri2_ali"
    shard = Shard(*shard_args(ws, "train", 1, si_features(src))[0])
    shard.set_alignments(read_ali_dir(src))
    tm, am = read_model(src / "final.mdl")
    stats = shard.fmllr_stats(tm, am, Lang.load(ws.lang).silence_phone_ids)
    return shard, tm, am, stats, ws


def speaker_loglike(shard, tm, am, speaker, transform, silence_phones) -> float:
    """Log-likelihood of a speaker's aligned non-silence frames (those the transform is estimated
    on: silence weighs 0) under ``am`` after ``transform``, with the Jacobian (the frames' total
    log-likelihood in the original feature space). EM guarantees a rise on these frames only: the
    silence frames may lose likelihood."""
    tables = TransitionTables(tm)
    utts = [u for u in shard.speaker_utterances()[speaker] if u in shard.alignments]
    feats = np.concatenate([apply_fmllr(shard.feats[u], transform) for u in utts])
    ali = np.concatenate([shard.alignments[u] for u in utts])
    weights = (~np.isin(tables.phone[ali], list(silence_phones))).astype(np.float64)
    stats = accumulate_fmllr_stats(GmmParams.from_am(am), feats, tables.pdf[ali], weights)
    return stats.loglike + stats.beta * np.linalg.slogdet(np.asarray(transform)[:, :-1])[1]


def test_each_row_update_raises_the_auxiliary_function(tri2_speakers):
    _, _, am, stats, _ = tri2_speakers
    speaker, spk_stats = sorted(stats.items())[0]
    assert spk_stats.beta > 500 and spk_stats.dim == am.dim == 40
    transform = identity_transform(40)
    inv_g = np.linalg.inv(spk_stats.G)
    objf = [fmllr_objective(transform, spk_stats)]
    for _ in range(3):
        for row in range(40):
            update_row(transform, inv_g[row], spk_stats.K[row], spk_stats.beta, row)
            objf.append(fmllr_objective(transform, spk_stats))
    steps = np.diff(objf)
    assert np.all(steps >= -1e-6 * abs(objf[0])), f"{speaker}: a row update lowered the objective"
    assert objf[-1] > objf[0]
    # The estimator (40 passes) ends at least as high, and at a maximum: nearby transforms do worse.
    final, info = estimate_fmllr(spk_stats)
    assert info["updated"] and info["objf_after"] >= objf[-1] - 1e-6 * abs(objf[-1])
    assert info["objf_impr"] == pytest.approx(info["objf_after"] - info["objf_before"])
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert fmllr_objective(final + 1e-3 * rng.standard_normal(final.shape), spk_stats) < info["objf_after"]


def test_every_speakers_fmllr_raises_its_own_log_likelihood(tri2_speakers):
    shard, tm, am, stats, ws = tri2_speakers
    silence = Lang.load(ws.lang).silence_phone_ids
    gains = {}
    for speaker, spk_stats in stats.items():
        transform, info = estimate_fmllr(spk_stats)
        before = speaker_loglike(shard, tm, am, speaker, identity_transform(40), silence)
        after = speaker_loglike(shard, tm, am, speaker, transform, silence)
        gains[speaker] = (after - before) / spk_stats.beta
        assert after > before, speaker
        assert info["objf_impr"] > 0
    assert len(gains) == 10 and min(gains.values()) > 0.1  # nats per frame: not a rounding effect


def test_the_identity_is_returned_without_data(tri2_speakers):
    shard, tm, am, _, ws = tri2_speakers
    for stats in (FmllrStats.zeros(40), accumulate_fmllr_stats(GmmParams.from_am(am),
                                                               np.zeros((10, 40)), np.zeros(10, dtype=int))):
        transform, info = estimate_fmllr(stats)  # no frames / 10 frames, fewer than min_count
        assert np.array_equal(transform, identity_transform(40)) and not info["updated"]
    # All silence (weight 0): no statistics either.
    assert accumulate_fmllr_stats(GmmParams.from_am(am), np.ones((5, 40)), np.zeros(5, dtype=int),
                                  np.zeros(5)).beta == 0
    # A speaker whose utterances have no alignment keeps the features as they are.
    speaker, utts = sorted(shard.speaker_utterances().items())[0]
    bare = Shard(*shard_args(ws, "train", 1, shard.feature_spec)[0])
    bare.set_alignments({u: a for u, a in shard.alignments.items() if u not in utts})
    before = {u: bare.feats[u].copy() for u in utts}
    infos = bare.update_fmllr(tm, am, [])
    assert not infos[speaker]["updated"] and infos[speaker]["frames"] == 0
    assert np.array_equal(bare.get_speaker_transforms()[speaker], identity_transform(40))
    assert all(np.allclose(bare.feats[u], before[u], atol=1e-5) for u in utts)


def test_a_speaker_with_fewer_frames_than_dimensions_keeps_its_transform():
    """35 frames above min_count (weights 1) but fewer than the 41 dimensions of x+: G is singular;
    the estimate keeps the start instead of stopping the stage (as on the first 300 AN4 train
    utterances, whose last speaker had 35 speech frames)."""
    rng = np.random.default_rng(0)
    dim, frames = 40, 35
    x = np.hstack([rng.normal(size=(frames, dim)), np.ones((frames, 1))])
    stats = FmllrStats(float(frames), rng.normal(size=(dim, dim + 1)),
                       np.repeat((x.T @ x)[None], dim, axis=0))
    start = identity_transform(dim) * 1.5
    transform, info = estimate_fmllr(stats, start)
    assert np.array_equal(transform, start) and not info["updated"]
    assert info["reason"] == "singular statistics" and info["rank"] == 35


def test_compose_transforms_applies_b_then_a():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x = rng.standard_normal((7, 3))
    assert np.allclose(apply_fmllr(x, compose_affine(a, b)), apply_fmllr(apply_fmllr(x, b), a), atol=1e-5)


def test_trans_archive_round_trips_through_kaldiio(tmp_path):
    rng = np.random.default_rng(2)
    transforms = {"spk2": rng.standard_normal((40, 41)), "spk1": identity_transform(40)}
    write_trans_archive(tmp_path / "trans.1", transforms)
    loaded = dict(kaldiio.load_ark(str(tmp_path / "trans.1")))
    assert list(loaded) == ["spk1", "spk2"]  # sorted keys, as Kaldi's table writers get them
    for spk, mat in transforms.items():
        assert loaded[spk].dtype == np.float32 and np.array_equal(loaded[spk], mat.astype(np.float32))
    assert read_trans_archive(tmp_path / "trans.1").keys() == transforms.keys()
    # Kaldi's binary table entry: "<key> \0B" then a float matrix token "FM " and its sizes.
    data = (tmp_path / "trans.1").read_bytes()
    assert data.startswith(b"spk1 \0BFM \x04\x28\x00\x00\x00\x04\x29\x00\x00\x00")


def test_tri3_writes_a_trans_archive_per_job_with_each_speakers_matrix(an4_slice_tri3):
    ws = an4_slice_tri3
    out = ws.exp / "tri3"
    from lhotse import CutSet

    speaker = {c.id: c.supervisions[0].speaker for c in CutSet.from_file(ws.mfcc_cuts("train"))}
    for j, (*_, utts, _features) in enumerate(shard_args(ws, "train", 2), start=1):
        trans = read_trans_archive(out / f"trans.{j}")
        assert sorted(trans) == sorted({speaker[u] for u in utts})  # the job's speakers, each once
        assert all(m.shape == (40, 41) for m in trans.values())
        assert not any(np.allclose(m, identity_transform(40), atol=1e-3) for m in trans.values())
    # tri3_ali: train's jobs then dev's and test's, each with its transforms.
    splits = read_json(ws.exp / "tri3_ali" / "splits.json")
    assert list(splits) == ["train", "dev", "test"]
    num_jobs = int((ws.exp / "tri3_ali" / "num_jobs").read_text())
    assert sorted(p.name for p in (ws.exp / "tri3_ali").glob("trans.*")) == sorted(
        f"trans.{j}" for j in range(1, num_jobs + 1))
    # As tri1 on the slice: dev all aligned; one test utterance (an440-mjgm-b) fails every system's alignment.
    tri1 = read_json(ws.exp / "tri1_ali" / "splits.json")
    for split in ("dev", "test"):
        assert splits[split]["aligned"] + splits[split]["failed"] == splits[split]["utterances"]
        assert splits[split]["failed"] <= tri1[split]["failed"]
    assert splits["dev"]["failed"] == 0
    assert (out / "final.alimdl").exists() and (out / "final.mat").exists()


def test_each_fmllr_pass_of_the_run_raised_its_objective(an4_slice_tri3):
    diagnostics = read_json(an4_slice_tri3.exp / "tri3" / "diagnostics.json")
    passes = diagnostics["fmllr"]
    assert [p["iter"] for p in passes] == [0, *TRI3_SLICE["fmllr_iters"]]
    for p in passes:
        assert p["speakers"] == 10 and p["updated"] == 10
        assert p["objf_impr_per_frame"] > 0 and p["min_speaker_objf_impr"] >= 0
    # The first transform (from tri2's model) does most of the work; later ones refine it.
    assert passes[0]["objf_impr_per_frame"] > passes[-1]["objf_impr_per_frame"]
    marked = {h["iter"]: h["fmllr_objf_impr_per_frame"] for h in diagnostics["iterations"]
              if "fmllr_objf_impr_per_frame" in h}
    assert marked == {p["iter"]: p["objf_impr_per_frame"] for p in passes[1:]}


def test_tri3_stage_runs_and_a_rerun_of_the_same_request_is_already_done(an4_slice_tri3, caplog):
    ws = an4_slice_tri3
    done = read_json(ws.done_dir / "tri3.json")["summary"]
    assert done["num_pdfs"] > 40 and done["failed"] == 0 and done["aligned"] == done["utterances"]
    model = (ws.exp / "tri3" / "final.mdl").read_bytes()
    caplog.clear()
    assert run_stage("tri3", ws, tri3_stage, nj=1, **TRI3_SLICE) == done     # fewer jobs: the same request
    assert "[an4] tri3: already done with these options" in caplog.text
    assert (ws.exp / "tri3" / "final.mdl").read_bytes() == model and is_done(ws, "tri3")


@pytest.mark.timeout(600)
def test_two_pass_wer_check_is_grid_scored_on_adapted_dev_and_decodes_test_at_its_point(an4_slice_tri3):
    """decode_fmllr.sh's check scored as the other GMM stages': each split adapted by its own SI
    and second pass, the point picked from the final pass's dev WERs alone, test decoded there."""
    from weakalign.kaldi_steps.execution import Executor
    from weakalign.kaldi_steps.grid_score import ScoringGrid, pick_point
    from weakalign.kaldi_steps.kaldi_io import read_model as read
    from weakalign.kaldi_steps.train_sat import decode_fmllr_wer

    ws = an4_slice_tri3
    tm, am = read(ws.exp / "tri3" / "final.mdl")
    _, alimdl = read(ws.exp / "tri3" / "final.alimdl")
    grid = ScoringGrid(lm_weights=(9, 12), penalties=(0.0, 1.0))
    with Executor(nj=1) as in_process:
        result = decode_fmllr_wer(ws, ws.exp / "tri3", "test", in_process, tm, am, alimdl=alimdl,
                                  silence_phones=list(Lang.load(ws.lang).silence_phone_ids),
                                  features=si_features(ws.exp / "tri3"),
                                  grid=grid)
    assert result["scoring"] == "kaldi-lattice" and result["grid"]["method"] == "lattice"
    dev = {tuple(map(float, k.split("_"))): {"wer": v} for k, v in result["dev_wer"].items()}
    assert (result["lm_weight"], result["penalty"]) == pick_point(dev) and len(dev) == 4
    assert set(result["passes"]) == {"dev", "test"} and result["si_wer"] == result["passes"]["test"]["si_wer"]
    for info in result["passes"].values():
        assert [f["updated"] for f in info["fmllr"]] == [f["speakers"] for f in info["fmllr"]]
        assert all(f["objf_impr_per_frame"] > 0 for f in info["fmllr"])
    # The adapted final pass beats the speaker-independent first pass on the slice's test.
    assert result["wer"] < result["si_wer"], result


def test_tri3_is_opt_in_after_tri2_and_goes_stale_with_it():
    assert "tri3" not in select_stages(None, None) and "tri3" not in select_stages(None, "tri2")
    assert select_stages(None, "tri3")[-3:] == ["tri1", "tri2", "tri3"]
    assert select_stages("tri3", None) == ["tri3", "hybrid", "export"]
    assert "tri3" in dependents("tri2") and "tri3" in dependents("tri1") and dependents("tri3") == []


def test_the_hybrids_source_ali_is_a_declared_input_only_when_not_tri1(an4_slice_tri3):
    from weakalign.kaldi_steps.hybrid.stage import hybrid_stage, source_ali_input
    from weakalign.pipeline.options import input_fingerprint

    ws = an4_slice_tri3
    assert input_fingerprint(hybrid_stage, ws, {}) == {} == source_ali_input(ws, {"source_ali": "tri1_ali"})
    tri3 = source_ali_input(ws, {"source_ali": "tri3_ali"})["source_ali"]
    assert tri3.startswith("tri3_ali sha256:") and tri3 != source_ali_input(ws, {"source_ali": "tri2_ali"})["source_ali"]
    with pytest.raises(ValueError, match="source_ali must be one of"):
        hybrid_stage(ws, source_ali="mono_ali")


@pytest.mark.timeout(600)
def test_the_hybrid_trains_on_tri3_alignments_and_realigns_with_tri3s_model_and_tree(an4_slice_tri1, an4_slice_tri3,
                                                                                    tmp_path):
    """``--source-ali tri3_ali``: targets, tree, transition model and the agreement figure are
    tri3's, and its RESULTS.md says so (issue #16 item 4)."""
    import shutil

    from weakalign.kaldi_steps.hybrid.stage import hybrid_stage
    from weakalign.pipeline.workspace import Workspace
    from tests.kaldi_steps.hybrid.test_stage import TINY

    src = an4_slice_tri3
    # The slice's own data root (fbank too); tri3's workspace links only what the GMMs read.
    ws = Workspace(src.corpus, data_root=an4_slice_tri1.data_root, exp_root=tmp_path / "exp")
    for name in ("tri3", "tri3_ali"):
        shutil.copytree(src.exp / name, ws.exp / name)
    run_stage("hybrid", ws, hybrid_stage, nj=1, device="cpu", source_ali="tri3_ali", decode=False,
              **{**TINY, "epochs": 2})
    diagnostics = read_json(ws.exp / "hybrid" / "diagnostics.json")
    assert diagnostics["gmm"] == "tri3" and diagnostics["source"] == "tri3_ali"
    assert diagnostics["num_pdfs"] == read_model(src.exp / "tri3" / "final.mdl")[0].num_pdfs
    for name in ("tree", "final.mdl"):
        assert (ws.exp / "hybrid_ali" / name).read_bytes() == (src.exp / "tri3" / name).read_bytes(), name
    assert "agreement with tri3" in (ws.exp / "hybrid" / "RESULTS.md").read_text()
    assert 0.2 < diagnostics["agreement_with_tri1"] < 1.0
