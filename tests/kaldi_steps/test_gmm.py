"""GMM statistics/update and the mono + tri1 stages on the AN4 slice (weakalign.kaldi_steps.gmm)."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import numpy as np
import pytest
from lhotse import CutSet

from weakalign.kaldi_steps.diag_gmm import GmmParams, accumulate_gmm_stats, gmm_from_arrays, update_model
from weakalign.kaldi_steps.shard import Shard, split_by_speaker
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model, read_tree
from weakalign.kaldi_steps.lang import Lang
from weakalign.pipeline.io import read_json


def _random_am(num_pdfs=3, gauss=(1, 2, 3), dim=4, seed=0):
    rng = np.random.default_rng(seed)
    am = khg.AmDiagGmm()
    for j in range(num_pdfs):
        g = gauss[j]
        w = rng.uniform(0.5, 1.0, g)
        am.add_pdf(gmm_from_arrays(w / w.sum(), rng.normal(0, 2, (g, dim)), rng.uniform(0.5, 2.0, (g, dim))))
    return am


def test_vectorised_stats_equal_per_frame_posteriors():
    am = _random_am()
    rng = np.random.default_rng(1)
    feats = rng.normal(0, 2, (50, 4)).astype(np.float32)
    pdfs = rng.integers(0, 3, 50)
    stats = accumulate_gmm_stats(GmmParams.from_am(am), feats, pdfs)
    offsets = GmmParams.from_am(am).offsets
    occ = np.zeros_like(stats.occ)
    x = np.zeros_like(stats.x)
    like = 0.0
    for f, j in zip(feats, pdfs):
        gmm = am.get_pdf(int(j))
        post = np.asarray(gmm.component_posteriors(f)[1] if isinstance(gmm.component_posteriors(f), tuple)
                          else gmm.component_posteriors(f))
        occ[offsets[j]:offsets[j + 1]] += post
        x[offsets[j]:offsets[j + 1]] += post[:, None] * f[None, :].astype(np.float64)
        like += gmm.log_likelihood(f)
    np.testing.assert_allclose(stats.occ, occ, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.x, x, rtol=1e-4, atol=1e-4)
    assert stats.loglike == pytest.approx(like, rel=1e-5)


def test_update_gives_ml_estimates_and_mixes_up():
    am = _random_am(num_pdfs=1, gauss=(1,), dim=2)
    tm_free_counts = None
    rng = np.random.default_rng(2)
    feats = rng.normal([1.0, -2.0], [0.5, 3.0], (4000, 2))
    stats = accumulate_gmm_stats(GmmParams.from_am(am), feats, np.zeros(4000, dtype=np.int64))

    class NoTransitions:  # the Gaussian update is under test here, not the transition one
        def mle_update(self, counts, config):
            return 0.0, 1.0

    new, info = update_model(NoTransitions(), am, stats, tm_free_counts, mixup=4)
    assert new.num_gauss == 4 and info["occs"][0] == pytest.approx(4000)
    single, _ = update_model(NoTransitions(), am, stats, None, mixup=0)
    mean = single.get_pdf(0).means[0] if hasattr(single.get_pdf(0), "means") else None
    np.testing.assert_allclose(np.asarray(mean), feats.mean(0), atol=1e-3)
    np.testing.assert_allclose(1.0 / np.asarray(single.get_pdf(0).inv_vars[0]), feats.var(0), rtol=1e-3)


def test_split_by_speaker_keeps_speakers_whole_and_balances():
    utts = {f"{s}-{i}": (s, 1.0 + (s == "a")) for s in "abcdef" for i in range(3)}
    jobs = split_by_speaker(utts, 2)
    assert sorted(u for j in jobs for u in j) == sorted(utts)
    for job in jobs:
        for other in jobs:
            if other is not job:
                assert not {u.split("-")[0] for u in job} & {u.split("-")[0] for u in other}
    assert split_by_speaker(utts, 2) == jobs


def _frames(ws, split):
    return {c.id: c.num_frames for c in CutSet.from_file(ws.mfcc_cuts(split))}


@pytest.mark.parametrize("system", ["mono", "tri1"])
def test_training_raises_loglike_and_aligns_every_utterance(an4_slice_tri1, system):
    ws = an4_slice_tri1
    diag = read_json(ws.exp / system / "diagnostics.json")
    likes = [it["avg_loglike_per_frame"] for it in diag["iterations"]]
    assert likes[-1] > likes[0] + 0.3, likes
    assert sum(b < a - 0.05 for a, b in zip(likes, likes[1:])) == 0, likes  # EM: no real decrease
    for key in ("utterances", "aligned", "retried", "failed", "avg_loglike_per_frame", "num_pdfs",
                "num_gauss", "wer", "wer_set"):
        assert key in diag
    tm, am = read_model(ws.exp / system / "final.mdl")
    assert read_tree(ws.exp / system / "tree").num_pdfs == am.num_pdfs == diag["num_pdfs"]
    frames = _frames(ws, "train")
    ali = read_ali_dir(ws.exp / system)
    assert len(ali) >= 0.99 * len(frames)
    for utt, a in ali.items():
        assert len(a) == frames[utt], utt
        assert a.min() >= 1 and a.max() <= tm.num_transition_ids


def test_tri1_ali_has_train_and_dev_with_frame_counts(an4_slice_tri1):
    ws = an4_slice_tri1
    d = ws.exp / "tri1_ali"
    ali = read_ali_dir(d)
    utt2split = dict(line.split() for line in (d / "utt2split").read_text().splitlines())
    assert set(utt2split) == set(ali)
    for split in ("train", "dev"):
        frames = _frames(ws, split)
        got = [u for u, s in utt2split.items() if s == split]
        assert len(got) >= 0.99 * len(frames)
        for utt in got:
            assert len(ali[utt]) == frames[utt]
    tm, _ = read_model(d / "final.mdl")
    tri_tm, _ = read_model(ws.exp / "tri1" / "final.mdl")
    assert tm.num_pdfs == tri_tm.num_pdfs > read_model(ws.exp / "mono" / "final.mdl")[0].num_pdfs // 2


def test_bad_utterances_are_named_and_training_goes_on(an4_slice_tri1, tmp_path):
    """An OOV word becomes <UNK> (reported); a transcript too long for its audio fails to align
    (reported); the other utterances align."""
    ws = an4_slice_tri1
    cuts = CutSet.from_file(ws.mfcc_cuts("train")).subset(first=3).to_eager()
    cuts = list(cuts)
    cuts[0].supervisions[0].text = cuts[0].supervisions[0].text + " QWERTYZZZ"
    short = cuts[1]
    words = "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ".split()
    short.supervisions[0].text = " ".join(words * 10)  # ~100 words for a few seconds of audio
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    ids = [c.id for c in cuts]
    shard = Shard(str(ws.lang), str(path), str(ws.cmvn("train")), ids)
    problems = shard.get_problems()
    assert any(u == cuts[0].id and r.startswith("oov") and "QWERTYZZZ" in r for u, r in problems), problems
    assert shard.word_ids[cuts[0].id][-1] == Lang.load(ws.lang).oov_id
    tm, am = read_model(ws.exp / "mono" / "final.mdl")
    from weakalign.kaldi_steps.train_mono import monophone_context_dependency

    ctx = monophone_context_dependency(Lang.load(ws.lang))
    shard.compile_graphs(tm, ctx)
    eq = shard.equal_align()
    assert [u for u, _ in eq["failed"]] == [short.id]
    res = shard.align(tm, am, 10.0, 40.0)
    assert [u for u, _ in res["failed"]] == [short.id]
    assert res["aligned"] == 2 and set(shard.get_alignments()) == {cuts[0].id, cuts[2].id}


def test_decoding_with_the_trained_tri1_model_recognises_words(an4_slice_tri1):
    """HCLG from graph.make_graph + GMM decodables: the slice model (60 training utterances)
    gets most test words right; a broken model/graph/decodable pairing gives ~100% WER."""
    from weakalign.kaldi_steps.execution import Executor
    from weakalign.kaldi_steps.gmm import decode_wer

    ws = an4_slice_tri1
    tm, am = read_model(ws.exp / "tri1" / "final.mdl")
    with Executor(nj=1) as in_process:
        result = decode_wer(ws, ws.exp / "tri1", "test", in_process, tm, am, scales=(0.0833,), scoring="scales")
    assert result["acoustic_scale"] == 0.0833 and set(result["dev_wer"]) == {"0.0833"}
    assert result["words"] > 30
    assert result["wer"] < 80.0, result


def test_grid_scoring_picks_its_point_on_dev_only(an4_slice_tri1):
    """Kaldi's score.sh way: the (LM weight, penalty) with the lowest dev WER (ties: smaller
    weight, then penalty) is the point the test set is scored at; scoring test instead of dev
    leaves the choice unchanged (test plays no part in it)."""
    from weakalign.kaldi_steps.execution import Executor
    from weakalign.kaldi_steps.gmm import decode_wer
    from weakalign.kaldi_steps.grid_score import ScoringGrid, pick_point

    ws = an4_slice_tri1
    tm, am = read_model(ws.exp / "tri1" / "final.mdl")
    grid = ScoringGrid(lm_weights=(9, 12), penalties=(0.0, 1.0))
    with Executor(nj=1) as in_process:
        on_test = decode_wer(ws, ws.exp / "tri1", "test", in_process, tm, am, grid=grid)
        on_dev = decode_wer(ws, ws.exp / "tri1", "dev", in_process, tm, am, grid=grid)
    assert on_test["scoring"] == "kaldi-lattice" and on_test["grid"] == {
        "method": "lattice", "lm_weights": [9, 12], "penalties": [0.0, 1.0], "lattice_lm_weight": 12.0}
    dev = {tuple(float(x) for x in k.split("_")): {"wer": v} for k, v in on_test["dev_wer"].items()}
    assert len(dev) == 4 and pick_point(dev) == (on_test["lm_weight"], on_test["penalty"])
    assert (on_dev["lm_weight"], on_dev["penalty"]) == (on_test["lm_weight"], on_test["penalty"])
    assert on_dev["wer"] == on_test["dev_wer"][f"{on_dev['lm_weight']}_{on_dev['penalty']}"]
    assert on_test["words"] > 30 and on_test["wer"] < 80.0, on_test
    assert on_test["at_grid_edge"] is True  # a grid of two weights: whichever is picked is at its edge


def test_mixing_up_follows_occupancy_and_is_reproducible():
    from weakalign.kaldi_steps.diag_gmm import split_by_count, split_targets

    occs = np.array([1000.0, 10.0, 0.0, 300.0])
    targets = split_targets(occs, 12, power=0.25, min_count=20.0)
    assert targets[1] == targets[2] == 1  # too few frames to split
    assert targets.sum() == 12 and targets[0] >= targets[3] > 1
    am = _random_am(num_pdfs=4, gauss=(1, 1, 1, 1))
    a = split_by_count(am, occs, 12)
    b = split_by_count(am, occs, 12)
    assert a.num_gauss == 12
    pa, pb = GmmParams.from_am(a), GmmParams.from_am(b)
    np.testing.assert_array_equal(pa.means_invvars, pb.means_invvars)
    # The split components straddle the original mean.
    orig = GmmParams.from_am(am)
    means = pa.means_invvars[pa.offsets[0]:pa.offsets[1]] / pa.inv_vars[pa.offsets[0]:pa.offsets[1]]
    np.testing.assert_allclose(means.mean(0), orig.means_invvars[0] / orig.inv_vars[0], atol=0.05)


def test_mono_killed_mid_run_reruns_to_the_same_bytes(an4_slice_tri1, tmp_path):
    """``kill -9`` of a mono stage (and its job processes) in the middle of its EM iterations, then
    the same request again: no marker was left, the stage is redone, and every model and alignment
    file is byte-identical to the uninterrupted run of the session fixture."""
    from tests.fixtures_align import linked_workspace
    from tests.fixtures_gmm import MONO_SLICE
    from tests.kill import kill_when
    from weakalign.kaldi_steps.train_mono import mono_stage
    from weakalign.pipeline.stage import marker_path, run_stage

    ws = linked_workspace(an4_slice_tri1, tmp_path, ali_dirs=(), data_dirs=("manifests", "mfcc", "lang"))
    code = ("import kaldi_hmm_gmm\n"
            "from weakalign.pipeline.stage import run_stage\n"
            "from weakalign.pipeline.workspace import Workspace\n"
            "from weakalign.kaldi_steps.train_mono import mono_stage\n"
            f"ws = Workspace('an4', data_root={str(ws.data_root)!r}, exp_root={str(ws.exp_root)!r})\n"
            f"run_stage('mono', ws, mono_stage, nj=2, **{MONO_SLICE!r})\n")
    log = ws.log_dir / "mono.log"
    kill_when(code, lambda: log.exists() and "mono iter 3" in log.read_text(), "mono iteration 3")
    assert not marker_path(ws, "mono").exists() and not (ws.exp / "mono" / "final.mdl").exists()

    run_stage("mono", ws, mono_stage, nj=2, **MONO_SLICE)
    names = ["final.mdl", "tree", "final.occs", "phones.txt", "num_jobs", "ali.1.gz", "ali.2.gz"]
    for name in names:
        assert (ws.exp / "mono" / name).read_bytes() == (an4_slice_tri1.exp / "mono" / name).read_bytes(), name
    assert sorted(p.name for p in (ws.exp / "mono").iterdir()) == sorted(names + ["diagnostics.json"])


def test_update_removes_low_count_gaussians_as_kaldi_keeping_the_last_with_its_old_parameters():
    """MleDiagGmmUpdate: a Gaussian is re-estimated only with occupancy *above* the minimum; the others
    are removed in index order, but the last one left keeps its old mean and variance."""
    from weakalign.kaldi_steps.diag_gmm import gmm_from_arrays, mle_update_gmm

    old = gmm_from_arrays(np.array([0.5, 0.5]), np.array([[1.0], [5.0]]), np.array([[2.0], [3.0]]))
    x = np.array([[30.0], [40.0]])
    x2 = np.array([[100.0], [200.0]])
    # Both at exactly the minimum (10): not above it -> the first removed, the second kept as it was.
    new, removed = mle_update_gmm(old, np.array([10.0, 10.0]), x, x2, min_gaussian_occupancy=10.0)
    assert removed == 1 and np.asarray(new.weights).tolist() == [1.0]
    np.testing.assert_allclose(np.asarray(new.means_invvars) / np.asarray(new.inv_vars), [[5.0]], rtol=1e-6)
    np.testing.assert_allclose(1.0 / np.asarray(new.inv_vars), [[3.0]], rtol=1e-6)
    # One above: it is re-estimated from its statistics, the other removed.
    new, removed = mle_update_gmm(old, np.array([10.0, 20.0]), x, x2, min_gaussian_occupancy=10.0)
    assert removed == 1
    np.testing.assert_allclose(np.asarray(new.means_invvars) / np.asarray(new.inv_vars), [[2.0]], rtol=1e-6)
    np.testing.assert_allclose(1.0 / np.asarray(new.inv_vars), [[200.0 / 20 - 4.0]], rtol=1e-6)


@pytest.mark.parametrize("stage", ["mono", "tri1", "tri2", "tri3"])
def test_an_unknown_decode_scoring_stops_a_gmm_stage_before_it_trains(tmp_path, stage):
    """Checked by click on the command line and in --config, but a Python caller's wrong value must not
    surface only at the WER check, after the training: the stage stops before it reads anything."""
    from weakalign.kaldi_steps.execution import Executor
    from weakalign.kaldi_steps.train_deltas import train_tri1
    from weakalign.kaldi_steps.train_lda_mllt import train_lda_mllt
    from weakalign.kaldi_steps.train_mono import train_mono
    from weakalign.kaldi_steps.train_sat import train_sat
    from weakalign.pipeline.workspace import Workspace

    train = {"mono": train_mono, "tri1": train_tri1, "tri2": train_lda_mllt, "tri3": train_sat}[stage]
    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")   # empty: nothing to read
    with Executor(nj=1) as in_process, pytest.raises(ValueError, match="'kaldi-grid' was the n-best check"):
        train(ws, in_process, decode_scoring="kaldi-grid")
