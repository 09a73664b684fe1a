"""Hybrid BLSTM training: frame reconciliation, held-out split, chunking, exact resume."""

import numpy as np
import pytest
import torch

from weakalign.kaldi_steps.hybrid import load_fbank, pdf_targets
from weakalign.kaldi_steps.hybrid_align import tid2pdf_array
from weakalign.kaldi_steps.hybrid_model import HybridBLSTM, HybridConfig, chunk_windows
from weakalign.kaldi_steps.hybrid_train import (FrameMismatch, TrainConfig, heldout_split, latest_checkpoint,
                                                reconcile_frames, scheduled_lr, train_hybrid)
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
from weakalign.pipeline.report import SkipReport


def test_reconcile_pads_with_edge_label_trims_and_rejects():
    labels = np.array([5, 5, 7, 9])
    assert reconcile_frames("u", labels, 6).tolist() == [5, 5, 7, 9, 9, 9]
    assert reconcile_frames("u", labels, 3).tolist() == [5, 5, 7]
    assert reconcile_frames("u", labels, 4).tolist() == labels.tolist()
    with pytest.raises(FrameMismatch, match="utt-x.*4 frames.*7"):
        reconcile_frames("utt-x", labels, 7)


def test_pdf_targets_count_mismatched_and_unaligned_utterances():
    feats = {"a": (np.zeros((10, 80), np.float32), "s", "A"), "b": (np.zeros((20, 80), np.float32), "s", "B"),
             "c": (np.zeros((5, 80), np.float32), "s", "C")}
    tid2pdf = np.array([0, 0, 1, 2])
    alis = {"a": np.array([1] * 9 + [3]), "b": np.array([2] * 12)}     # b: 8 frames short
    report = SkipReport("hybrid")
    out = pdf_targets(feats, alis, tid2pdf, report, max_mismatch=2)
    assert list(out) == ["a"] and out["a"][1].tolist() == [0] * 9 + [2]
    assert report.count == 2
    assert {u for u, _ in report.items} == {"b", "c"}


def test_heldout_split_is_by_speaker():
    utt2spk = {f"u{i:02d}": f"spk{i % 7}" for i in range(70)}
    train, held = heldout_split(utt2spk, 0.1, seed=3)
    assert len(held) == 10 and set(train).isdisjoint(held) and len(train) + len(held) == 70
    assert {utt2spk[u] for u in held}.isdisjoint({utt2spk[u] for u in train})
    assert heldout_split(utt2spk, 0.1, seed=3) == (train, held)


def test_learning_rate_decays_geometrically_and_halves_on_plateau():
    cfg = TrainConfig(epochs=5, lr=1e-3, lr_final=1e-5)
    assert [scheduled_lr(cfg, e) for e in (1, 3, 5)] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert scheduled_lr(cfg, 3, plateau_scale=0.5) == pytest.approx(5e-5)
    assert scheduled_lr(TrainConfig(epochs=5, lr=1e-3), 4) == pytest.approx(1e-3)   # no lr_final: constant


def test_speaker_mean_normalisation_on_real_fbank(an4_slice):
    raw = load_fbank(an4_slice, "train")
    normed = load_fbank(an4_slice, "train", cmn="speaker")
    assert normed.keys() == raw.keys()
    by_spk = {}
    for utt, (x, spk, _) in normed.items():
        by_spk.setdefault(spk, []).append(x)
        assert x.shape == raw[utt][0].shape and x.dtype == np.float32
    assert len(by_spk) > 1
    for spk, xs in by_spk.items():   # every speaker's frames now average to zero, per dimension
        assert np.abs(np.concatenate(xs).mean(0)).max() < 1e-3, spk
    some = next(iter(raw))
    assert not np.allclose(raw[some][0], normed[some][0])
    with pytest.raises(ValueError, match="cmn"):
        load_fbank(an4_slice, "train", cmn="utterance")


def test_chunked_log_probs_cover_every_frame_once():
    assert chunk_windows(100, 40, 20, 20) == [(0, 60, 0, 40), (20, 100, 40, 80), (60, 100, 80, 100)]
    model = HybridBLSTM(HybridConfig(num_pdfs=5, cells=8, proj=4, layers=1)).eval()
    x = torch.randn(100, 80)
    lp = model.utterance_log_probs(x, 40, 20, 20)
    assert lp.shape == (100, 5) and torch.allclose(lp.exp().sum(-1), torch.ones(100), atol=1e-5)
    # with context covering the whole utterance, chunking equals one whole-utterance pass
    whole = torch.log_softmax(model(x[None], torch.tensor([100]))[0], -1)
    assert torch.allclose(model.utterance_log_probs(x, 40, 100, 100), whole, atol=1e-5)


class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def slice_targets(an4_slice_tri1):
    ws = an4_slice_tri1
    trans_model, _ = read_model(ws.exp / "tri1_ali" / "final.mdl")
    feats = load_fbank(ws, "train")
    targets = pdf_targets(feats, read_ali_dir(ws.exp / "tri1_ali"), tid2pdf_array(trans_model),
                          SkipReport("test"), 2)
    return targets, int(trans_model.num_pdfs)


def test_resume_after_interruption_equals_uninterrupted_run(slice_targets, tmp_path):
    targets, num_pdfs = slice_targets
    utts = sorted(targets)
    train = {u: targets[u] for u in utts[:16]}
    held = {u: targets[u] for u in utts[16:19]}
    model_cfg = HybridConfig(num_pdfs=num_pdfs, cells=16, proj=8, layers=2, dropout=0.2)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, lr_final=1e-3, chunk_width=20, left_context=10,
                      right_context=10, seed=1)

    straight, _ = train_hybrid(train, held, model_cfg, cfg, tmp_path / "straight")

    def interrupt(epoch, step):
        if epoch == 2 and step == 3:
            raise _Interrupt
    with pytest.raises(_Interrupt):
        train_hybrid(train, held, model_cfg, cfg, tmp_path / "resumed", on_step=interrupt)
    assert latest_checkpoint(tmp_path / "resumed").name == "epoch-1.pt"   # epoch 2 never finished
    resumed, state = train_hybrid(train, held, model_cfg, cfg, tmp_path / "resumed")

    assert state.epoch == 2 and len(state.history) == 2
    assert [h["lr"] for h in state.history] == pytest.approx([3e-3, 1e-3])   # the decay resumed too
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ck_a = torch.load(tmp_path / "straight" / "checkpoints" / "epoch-2.pt", weights_only=False)
    ck_b = torch.load(tmp_path / "resumed" / "checkpoints" / "epoch-2.pt", weights_only=False)
    for k in ck_a["model"]:
        assert torch.equal(ck_a["model"][k], ck_b["model"][k]), k
    assert ck_a["state"]["history"] == ck_b["state"]["history"]
    # and training did something: the weights moved away from a fresh initialisation's loss
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
