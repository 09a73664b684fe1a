"""The ``hybrid`` stage end to end on the AN4 slice: a briefly trained BLSTM realigns real utterances."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from lhotse import CutSet

from weakalign.kaldi_steps.hybrid import stage as hybrid_stage_module
from weakalign.kaldi_steps.hybrid.stage import alignment_digest, hybrid_stage
from weakalign.kaldi_steps.hybrid.train import train_hybrid
from weakalign.kaldi_steps.train_deltas import read_utt2split
from weakalign.kaldi_steps.hybrid.realign import tid2pdf_array
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
from weakalign.pipeline.io import read_json
from weakalign.pipeline.stage import run_stage
from weakalign.pipeline.workspace import Workspace

SPLITS = ("train", "dev", "test")

#: A tiny model, trained briefly: the test is about the plumbing and the realignment, not accuracy.
TINY = {"cells": 32, "proj": 16, "layers": 2, "epochs": 6, "lr": 5e-3, "batch_size": 16,
        "chunk_width": 20, "left_context": 10, "right_context": 10, "infer_left_context": 15,
        "infer_right_context": 15, "patience": 3, "passes": 1}


@pytest.fixture(scope="module")
def hybrid_ws(an4_slice_tri1, tmp_path_factory):
    """The slice's data with a private copy of its tri1 outputs, so the shared session workspace
    (used by other packages' tests) never sees a ``hybrid_ali``. Returns the workspace, the stage
    summary and the utterance ids :func:`train_hybrid` was given (``train``, ``heldout``)."""
    src = an4_slice_tri1
    ws = Workspace(src.corpus, data_root=src.data_root, exp_root=tmp_path_factory.mktemp("hybrid_exp"))
    for name in ("tri1", "tri1_ali"):
        shutil.copytree(src.exp / name, ws.exp / name)
    seen = {}

    def recording_train_hybrid(train_data, heldout_data, *args, **kwargs):
        seen.update(train=set(train_data), heldout=set(heldout_data))
        return train_hybrid(train_data, heldout_data, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hybrid_stage_module, "train_hybrid", recording_train_hybrid)
        summary = run_stage("hybrid", ws, hybrid_stage, nj=2, device="cpu", **TINY)
    return ws, summary, seen


def test_outputs_are_in_the_gmm_alignment_format(hybrid_ws):
    ws, summary, _ = hybrid_ws
    ali_dir, tri1_dir = ws.exp / "hybrid_ali", ws.exp / "tri1_ali"
    for name in ("final.mdl", "tree", "num_jobs", "phones.txt", "utt2split"):
        assert (ali_dir / name).read_bytes() == (tri1_dir / name).read_bytes(), name
    hybrid, tri1 = read_ali_dir(ali_dir), read_ali_dir(tri1_dir)
    assert set(hybrid) <= set(tri1)
    assert len(hybrid) >= 0.99 * len(tri1)
    # same job split as tri1_ali: each archive holds the same utterances
    for j in range(1, int((ali_dir / "num_jobs").read_text()) + 1):
        from weakalign.kaldi_steps.kaldi_io import iter_ali_archive
        assert [u for u, _ in iter_ali_archive(ali_dir / f"ali.{j}.gz")] == \
               [u for u, _ in iter_ali_archive(tri1_dir / f"ali.{j}.gz") if u in hybrid]
    # one transition-id per fbank frame, train, dev and test
    frames = {c.id: c.num_frames for split in SPLITS for c in CutSet.from_file(ws.fbank_cuts(split))}
    assert {read_utt2split(ali_dir)[u] for u in hybrid} == set(SPLITS)
    trans_model, _ = read_model(ali_dir / "final.mdl")
    for utt, ali in hybrid.items():
        assert len(ali) == frames[utt], utt
        assert ali.min() >= 1 and ali.max() <= trans_model.num_transition_ids
    priors = np.load(ws.exp / "hybrid" / "priors.npy")
    assert priors.shape == (trans_model.num_pdfs,) and abs(priors.sum() - 1) < 1e-9


def test_realignment_agrees_with_tri1_well_above_chance_but_is_not_a_copy(hybrid_ws):
    ws, summary, _ = hybrid_ws
    trans_model, _ = read_model(ws.exp / "hybrid_ali" / "final.mdl")
    tid2pdf = tid2pdf_array(trans_model)
    hybrid, tri1 = read_ali_dir(ws.exp / "hybrid_ali"), read_ali_dir(ws.exp / "tri1_ali")
    split_of = read_utt2split(ws.exp / "tri1_ali")
    hybrid = {u: a for u, a in hybrid.items() if split_of[u] != "test"}   # the figure is train's and dev's
    same = sum(int((tid2pdf[a] == tid2pdf[tri1[u]]).sum()) for u, a in hybrid.items())
    total = sum(len(a) for a in hybrid.values())
    agreement = same / total
    # chance: two independent labelings with tri1's pdf frequencies agree with probability sum p^2
    counts = np.bincount(np.concatenate([tid2pdf[a] for a in tri1.values()]), minlength=trans_model.num_pdfs)
    chance = float(((counts / counts.sum()) ** 2).sum())
    assert agreement > max(0.35, 3 * chance), (agreement, chance)
    assert agreement < 0.99, "the realignment is (nearly) a copy of tri1's"
    assert summary["agreement_with_tri1"] == pytest.approx(agreement)
    # the realignment is its own: some utterance's transition-id sequence differs from tri1's
    assert any(not np.array_equal(a, tri1[u]) for u, a in hybrid.items())


def test_diagnostics_and_results(hybrid_ws):
    ws, summary, _ = hybrid_ws
    diag = json.loads((ws.exp / "hybrid" / "diagnostics.json").read_text())
    for key in ("frame_acc_train", "frame_acc_heldout", "agreement_with_tri1", "utterances", "aligned",
                "retried", "failed", "wer", "wer_set", "tri1_wer"):
        assert key in diag, key
    assert diag["utterances"] == diag["aligned"] + diag["failed"] == len(read_ali_dir(ws.exp / "tri1_ali"))
    assert diag["failed"] <= 0.01 * diag["utterances"]
    assert 0 < diag["frame_acc_heldout"] < 1 and 0 < diag["frame_acc_train"] < 1
    assert diag["wer_set"] == "test" and 0 <= diag["wer"]
    # Scored as the GMM stages are: Kaldi's score.sh point picked on dev, test decoded once at it.
    details = diag["wer_details"]
    assert details["scoring"] == "kaldi-lattice" and details["grid"]["method"] == "lattice"
    assert details["acoustic_scale"] == pytest.approx(1 / details["lm_weight"])
    assert details["lm_weight"] in details["grid"]["lm_weights"] and details["penalty"] in details["grid"]["penalties"]
    dev = details["dev_wer"]
    assert len(dev) == 33 and dev[f"{details['lm_weight']}_{details['penalty']}"] == min(dev.values())
    # The scores the decode jobs read were scratch: gone once the check is done.
    assert not list(ws.exp.rglob("decode_scratch"))
    # test is realigned and reported on its own: dev's figure counts dev's frames only
    split_frames = {split: sum(c.num_frames for c in CutSet.from_file(ws.fbank_cuts(split))
                               if c.id in read_ali_dir(ws.exp / "tri1_ali")) for split in SPLITS}
    assert {k: diag["frames_scored"][k] for k in ("dev", "test")} == {k: split_frames[k] for k in ("dev", "test")}
    assert diag["frames_scored"]["train"] + diag["frames_scored"]["heldout"] == split_frames["train"]
    assert 0 < diag["frame_acc_test"] < 1 and 0 < diag["frame_acc_dev"] < 1
    assert diag["realigned_per_split"]["test"] >= read_json(ws.exp / "tri1_ali" / "splits.json")["test"]["aligned"] - 1
    assert (ws.exp / "hybrid" / "final.pt").exists()
    text = (ws.exp / "hybrid" / "RESULTS.md").read_text()
    assert "agreement with tri1" in text and "WER on test" in text and "frame accuracy, test" in text


def test_the_network_realigns_and_decodes_with_the_inference_context(hybrid_ws):
    """``--infer-left-context``/``--infer-right-context``: trained on 10/10 frames of context, the network
    realigns with 15/15 (dev's frame accuracy is its argmax over chunks seen so, not as trained), and a
    reloaded pass decodes with 15/15 too."""
    import torch

    from weakalign.pipeline.report import SkipReport

    ws, _, _ = hybrid_ws
    diag = read_json(ws.exp / "hybrid" / "diagnostics.json")
    assert diag["infer_context"] == [15, 15] and diag["train_config"]["left_context"] == 10
    assert "(15/15 when realigning and decoding)" in (ws.exp / "hybrid" / "RESULTS.md").read_text()
    p = hybrid_stage_module.load_finished_pass(ws, ws.exp / "hybrid")
    assert (p.train_config.chunk_width, p.train_config.left_context, p.train_config.right_context) == (20, 15, 15)
    tid2pdf = tid2pdf_array(read_model(ws.exp / "tri1_ali" / "final.mdl")[0])
    dev = hybrid_stage_module.pdf_targets(hybrid_stage_module.load_fbank(ws, "dev", "speaker"),
                                          read_ali_dir(ws.exp / "tri1_ali"), tid2pdf, SkipReport("test"), 2)

    def dev_frame_acc(context: int) -> float:
        with torch.no_grad():
            hits = [(p.model.utterance_log_probs(torch.from_numpy(x), 20, context, context).argmax(-1).numpy() == y)
                    for x, y in dev.values()]
        return float(np.concatenate(hits).mean())

    assert diag["frame_acc_dev"] == pytest.approx(dev_frame_acc(15), abs=1e-9)
    assert diag["frame_acc_dev"] != pytest.approx(dev_frame_acc(10), abs=1e-9)


def test_no_test_utterance_reaches_the_hybrid_training(hybrid_ws):
    """Issue #18: test is realigned, never trained or selected on; the checkpoints name the train
    and dev targets only, so a hybrid trained before test was aligned resumes instead of retraining."""
    ws, _, seen = hybrid_ws
    test_ids = set(CutSet.from_file(ws.fbank_cuts("test")).ids)
    train_ids = set(CutSet.from_file(ws.fbank_cuts("train")).ids)
    # speed-perturbed copies are named sp<factor>-<train utterance>
    trained_on = {re.sub(r"^sp[0-9.]+-", "", u) for u in seen["train"] | seen["heldout"]}
    assert seen["train"] and seen["heldout"] and trained_on <= train_ids
    assert test_ids.isdisjoint(trained_on) and test_ids.isdisjoint(seen["train"] | seen["heldout"])
    assert test_ids & set(read_ali_dir(ws.exp / "hybrid_ali"))
    import torch

    ckpt = torch.load(next((ws.exp / "hybrid" / "checkpoints").glob("epoch-*.pt")), weights_only=False)
    tri1 = read_ali_dir(ws.exp / "tri1_ali")
    assert ckpt["targets_id"] == alignment_digest({u: a for u, a in tri1.items() if u not in test_ids})


def test_the_decode_benchmark_times_one_job_against_nj_on_the_finished_hybrid(hybrid_ws):
    """``make bench``'s hybrid_decode: the same paths in 1 and 2 jobs (it raises otherwise), both timed,
    and the scratch archives gone after. On 5 utterances: the bench's 60 took 100 s of the suite."""
    from weakalign.kaldi_steps.hybrid.benchmarks import bench_hybrid_decode

    ws, _, _ = hybrid_ws
    result = bench_hybrid_decode(ws, 2, utterances=5)
    dev = len(CutSet.from_file(ws.fbank_cuts("dev")))
    assert result["utterances"] == min(dev, 5) and result["frames"] > 0 and result["nj"] == 2
    assert result["one_job_s"] > 0 and result["nj_jobs_s"] > 0
    # the times are rounded to 10 ms, the ratio is not: on 5 utterances that moves it by several %
    one, nj = result["one_job_s"], result["nj_jobs_s"]
    assert (one - 0.005) / (nj + 0.005) <= result["speedup"] <= (one + 0.005) / max(nj - 0.005, 1e-9)
    assert not (ws.exp / "bench" / "hybrid_decode_scratch").exists()


def test_the_realignment_benchmark_times_the_batched_forward_against_one_utterance_per_call(hybrid_ws):
    """``make bench``'s hybrid_realign: the forward as the stage runs it (several utterances per batch)
    beside one utterance per call, with the defaults' inference context, on the finished network."""
    from weakalign.kaldi_steps.hybrid.benchmarks import _defaults, _infer_config, bench_hybrid_realign

    ws, _, _ = hybrid_ws
    result = bench_hybrid_realign(ws, 2)
    cfg = _infer_config(_defaults())
    assert result["trained_model"] and result["utterances"] > 0 and result["failed"] == 0
    assert result["context"] == [cfg.left_context, cfg.right_context] and result["input_cmn"] == "speaker"
    assert result["forward_speedup"] == pytest.approx(
        result["forward_frames_per_s"] / result["forward_one_utterance_per_call_frames_per_s"], rel=0.01)


def test_the_training_benchmark_times_the_stages_ranks_against_the_old_trainer_on_the_same_chunks(hybrid_ws):
    """``make bench``'s hybrid_train: the stage's trainer on 2 DDP ranks and the trainer before issue #17
    take the same minibatches (the same supervised frames), and the FLOP figures follow from the counts."""
    from weakalign.kaldi_steps.hybrid.benchmarks import bench_hybrid_train

    ws, _, _ = hybrid_ws
    result = bench_hybrid_train(ws, 2, steps=4)
    new, old = result["trainer"], result["old_trainer"]
    assert result["ranks"] == 2 and result["threads_per_rank"] == max(1, os.cpu_count() // 2) and result["steps"] == 4
    assert new["supervised_frames"] == old["supervised_frames"] > 0
    # The stage pads its windows (each rank to its own longest), the old trainer packs them: never fewer.
    assert new["computed_frames"] >= old["computed_frames"] > old["supervised_frames"]
    assert new["flops_per_supervised_frame"] == round(
        result["flops_per_input_frame"] * new["computed_frames"] / new["supervised_frames"])
    assert new["share_of_matmul_peak"] == pytest.approx(new["achieved_gflops"] / result["matmul_gflops"], rel=0.02)
    assert result["speedup_vs_old"] == pytest.approx(new["train_frames_per_s"] / old["train_frames_per_s"], rel=0.01)


def test_the_wer_check_on_an_external_scheduler_finds_the_stages_result(hybrid_ws, external_scheduler, caplog):
    """``--cluster``: the decode jobs of the WER check run on a running scheduler's workers, reading
    the archives the stage wrote, and find what the stage's local jobs found."""
    import logging

    import torch

    from weakalign.kaldi_steps.hybrid.stage import _decode_wer, load_finished_pass

    ws, _, _ = hybrid_ws
    caplog.set_level(logging.INFO, logger="weakalign")
    p = load_finished_pass(ws, ws.exp / "hybrid")
    with torch.no_grad():
        wer = _decode_wer(ws, p.model, p.train_config, p.log_priors, p.trans_model, p.gmm_dir, nj=2,
                          cluster=external_scheduler, scratch=ws.exp / "hybrid" / "decode_scratch")
    assert "on the Dask cluster at " + external_scheduler in caplog.text
    stage = p.diagnostics["wer_details"]
    assert {k: wer[k] for k in ("dev_wer", "lm_weight", "penalty", "wer", "errors")} == \
        {k: stage[k] for k in ("dev_wer", "lm_weight", "penalty", "wer", "errors")}
    assert not (ws.exp / "hybrid" / "decode_scratch").exists()



def test_the_old_acoustic_scale_search_picks_its_scale_on_dev(hybrid_ws):
    """``scoring="scales"`` (the search before Kaldi's grid): one decode of dev per scale, the best one
    decodes the WER split, with no penalty."""
    import torch

    from weakalign.kaldi_steps.hybrid.stage import _decode_wer, load_finished_pass

    ws, _, _ = hybrid_ws
    p = load_finished_pass(ws, ws.exp / "hybrid")
    with torch.no_grad():
        wer = _decode_wer(ws, p.model, p.train_config, p.log_priors, p.trans_model, p.gmm_dir,
                          scales=(0.05, 0.1), scoring="scales")
    assert wer["scoring"] == "scales" and set(wer["dev_wer"]) == {"0.05", "0.1"}
    assert wer["acoustic_scale"] == min((0.05, 0.1), key=lambda s: (wer["dev_wer"][str(s)], s))
    assert wer["wer_set"] == ("test" if ws.fbank_cuts("test").exists() else "dev")
    assert 0 <= wer["wer"] and wer["errors"] >= 0
    with pytest.raises(ValueError, match="unknown WER scoring"):
        _decode_wer(ws, p.model, p.train_config, p.log_priors, p.trans_model, p.gmm_dir, scoring="lattice")

def test_rerun_is_skipped_and_resumes(hybrid_ws):
    ws, summary, _ = hybrid_ws
    assert run_stage("hybrid", ws, hybrid_stage, nj=2, device="cpu", **TINY) == summary


def test_the_marker_names_the_corpus_defaults_it_ran_with_and_asking_for_them_redoes_nothing(hybrid_ws):
    """Options left at ``None`` (AN4: tri1's alignments, speed perturbation 0.9/1.1) are recorded as
    the values they took, so naming them explicitly matches the finished run."""
    from weakalign.pipeline.stage import marker_path

    ws, summary, _ = hybrid_ws
    options = read_json(marker_path(ws, "hybrid"))["options"]
    assert (options["source_ali"], options["speed_perturb"], options["passes"], options["epochs"]) == \
        ("tri1_ali", [0.9, 1.1], 1, 6)
    assert run_stage("hybrid", ws, hybrid_stage, nj=2, device="cpu", **TINY, source_ali="tri1_ali",
                     speed_perturb=(1.1, 0.9, 1.0)) == summary
