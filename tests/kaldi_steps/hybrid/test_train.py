"""Hybrid BLSTM training: frame reconciliation, held-out split, chunking, exact resume."""

import numpy as np
import pytest
import torch

from lhotse import CutSet

from weakalign.kaldi_steps.hybrid.stage import load_fbank, pdf_targets, speed_perturbed_fbank, speed_perturbed_targets
from weakalign.kaldi_steps.hybrid.model import HybridBLSTM, HybridConfig, chunk_windows
from weakalign.kaldi_steps.hybrid.train import (FrameMismatch, TrainConfig, heldout_split, latest_checkpoint,
                                                reconcile_frames, scheduled_lr, train_hybrid)
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


def test_utterances_scored_in_one_batch_get_what_each_gets_alone():
    """Realignment and decoding score several utterances' chunks in one batch (issue #17): the same
    log-posteriors as one utterance at a time, over utterances shorter than a chunk and longer."""
    torch.manual_seed(0)
    model = HybridBLSTM(HybridConfig(num_pdfs=7, cells=16, proj=8, layers=2)).eval()
    utterances = [torch.randn(n, 80) for n in (5, 40, 41, 133, 97)]
    together = model.utterances_log_probs(utterances, 40, 20, 10)
    assert [len(lp) for lp in together] == [5, 40, 41, 133, 97]
    for x, lp in zip(utterances, together):
        assert torch.allclose(lp, model.utterance_log_probs(x, 40, 20, 10), atol=1e-5)


class _Interrupt(Exception):
    pass


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


def test_checkpoint_of_other_targets_is_not_resumed(slice_targets, tmp_path):
    targets, num_pdfs = slice_targets
    utts = sorted(targets)
    train = {u: targets[u] for u in utts[:8]}
    model_cfg = HybridConfig(num_pdfs=num_pdfs, cells=8, proj=4, layers=1)
    cfg = TrainConfig(epochs=2, batch_size=8, chunk_width=20, left_context=5, right_context=5)
    epochs_seen = []

    def interrupt(epoch, step):
        epochs_seen.append(epoch)
        if epoch == 2:
            raise _Interrupt
    with pytest.raises(_Interrupt):
        train_hybrid(train, {}, model_cfg, cfg, tmp_path, targets_id="pass-1-alignments", on_step=interrupt)
    epochs_seen.clear()
    train_hybrid(train, {}, model_cfg, cfg, tmp_path, targets_id="pass-1-alignments", on_step=lambda e, s: epochs_seen.append(e))
    assert set(epochs_seen) == {2}                  # same targets: resumed after epoch 1
    epochs_seen.clear()
    train_hybrid(train, {}, model_cfg, cfg, tmp_path, targets_id="pass-2-alignments", on_step=lambda e, s: epochs_seen.append(e))
    assert set(epochs_seen) == {1, 2}               # other targets: started afresh


def test_a_warm_start_begins_from_the_given_weights_and_a_resume_ignores_it(slice_targets, tmp_path):
    targets, num_pdfs = slice_targets
    train = {u: targets[u] for u in sorted(targets)[:8]}
    model_cfg = HybridConfig(num_pdfs=num_pdfs, cells=8, proj=4, layers=1, dropout=0.0)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=3e-3, lr_final=None, chunk_width=20, left_context=5,
                      right_context=5, seed=1)
    first, _ = train_hybrid(train, {}, model_cfg, cfg, tmp_path / "first")
    # lr 0: the run cannot move, so its weights are exactly where it started
    still = TrainConfig(**{**cfg.to_dict(), "lr": 0.0, "seed": 2})
    warm, _ = train_hybrid(train, {}, model_cfg, still, tmp_path / "warm", init_from=tmp_path / "first" / "final.pt")
    fresh, _ = train_hybrid(train, {}, model_cfg, still, tmp_path / "fresh")
    for k, v in first.state_dict().items():
        assert torch.equal(warm.state_dict()[k], v), k
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in first.state_dict().items())
    # a finished run is resumed as it is, whatever init_from now says
    again, _ = train_hybrid(train, {}, model_cfg, still, tmp_path / "fresh", init_from=tmp_path / "first" / "final.pt")
    for k, v in fresh.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    with pytest.raises(ValueError, match="cannot warm-start"):
        train_hybrid(train, {}, HybridConfig(num_pdfs=num_pdfs, cells=4, proj=4, layers=1), still,
                     tmp_path / "other", init_from=tmp_path / "first" / "final.pt")


def test_speed_perturbed_copies_of_real_audio(an4_slice, slice_targets):
    targets, _ = slice_targets
    some = dict(sorted(targets.items())[:6])
    copies = speed_perturbed_targets(speed_perturbed_fbank(an4_slice, some, [0.9, 1.0, 1.1], cmn="global"), some)
    assert sorted(copies) == sorted(f"sp{f}-{u}" for f in ("0.9", "1.1") for u in some)   # 1.0 is the original
    for utt, (x, y) in some.items():
        slow, fast = copies[f"sp0.9-{utt}"], copies[f"sp1.1-{utt}"]
        # 10 ms frames of audio played at 0.9x / 1.1x speed: about len/0.9 and len/1.1 frames
        assert abs(len(slow[0]) - len(x) / 0.9) <= 2 and abs(len(fast[0]) - len(x) / 1.1) <= 2
        for xs, ys in (slow, fast):
            assert xs.shape[1] == x.shape[1] and len(ys) == len(xs) and xs.dtype == np.float32
            # labels keep the original order: the run-length sequence survives up to dropped short runs
            runs = [int(v) for i, v in enumerate(ys) if i == 0 or ys[i - 1] != v]
            orig = [int(v) for i, v in enumerate(y) if i == 0 or y[i - 1] != v]
            it = iter(orig)
            assert all(r in it for r in runs)
        # the audio really changed: the slowed copy is not a resampling of the stored fbank frames
        assert not np.allclose(slow[0][: len(x)], x)
    normed = speed_perturbed_targets(speed_perturbed_fbank(an4_slice, some, [0.9], cmn="speaker"), some)
    by_spk = {}
    cuts = {c.id: c.supervisions[0].speaker for c in CutSet.from_file(an4_slice.fbank_cuts("train"))}
    for utt, (x, _) in normed.items():
        by_spk.setdefault(cuts[utt.split("-", 1)[1]], []).append(x)
    for xs in by_spk.values():
        assert np.abs(np.concatenate(xs).mean(0)).max() < 1e-3


@pytest.mark.parametrize("proj", [8, 0], ids=["projected", "oneDNN-no-projection"])
def test_unpacked_forward_equals_the_packed_reference_on_ragged_batches(proj):
    """The trainer's BLSTM path (per-direction LSTMs over unpacked tensors, issue #17) gives the packed
    ``nn.LSTM``'s logits at every valid position, and the same loss and gradients: with a projection
    (ATen's own step loop) and without (the default: oneDNN's fused LSTM, which the packed path does not use)."""
    torch.manual_seed(0)
    model = HybridBLSTM(HybridConfig(num_pdfs=30, cells=16, proj=proj, layers=3, dropout=0.0))
    assert model.blstm.proj_size == proj
    x = torch.randn(5, 20, 80)
    lens = torch.tensor([20, 7, 13, 20, 1])
    valid = torch.arange(20) < lens[:, None]
    model.eval()
    assert torch.allclose(model(x, lens)[valid], model.forward_packed(x, lens)[valid], atol=1e-5)
    full = torch.full((5,), 20)
    assert torch.allclose(model(x, full), model.forward_packed(x, full), atol=1e-5)
    y = torch.randint(0, 30, (5, 20)).masked_fill(~valid, -100)
    model.train()
    grads = []
    for forward in (model.forward, model.forward_packed):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(x, lens).reshape(-1, 30), y.reshape(-1), ignore_index=-100)
        loss.backward()
        grads.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


def test_chunk_table_batches_equal_the_python_chunk_path(slice_targets):
    """Precomputed chunk tensors give the minibatch the old per-chunk Python assembly gave: the same
    windows, per-frame targets (context and padding ignored), and so the same loss, frames and accuracy."""
    from weakalign.kaldi_steps.hybrid.train import IGNORE, ChunkTable, _batch_loss

    targets, num_pdfs = slice_targets
    data = {u: targets[u] for u in sorted(targets)[:12]}
    cfg = TrainConfig(chunk_width=40, left_context=20, right_context=20)
    table = ChunkTable(data, cfg)
    assert len(table) == len(table.chunks) > 12
    ids = list(range(0, len(table), 3))[:16]
    x, y, lens = table.batch(ids)
    for row, i in enumerate(ids):
        utt, w0, w1, c0, c1 = table.chunks[i]
        assert int(lens[row]) == w1 - w0
        assert torch.equal(x[row, :w1 - w0], torch.from_numpy(data[utt][0][w0:w1]))
        want = np.full(x.shape[1], IGNORE)
        want[c0 - w0:c1 - w0] = data[utt][1][c0:c1]
        assert y[row].tolist() == want.tolist()
    torch.manual_seed(0)
    model = HybridBLSTM(HybridConfig(num_pdfs=num_pdfs, cells=16, proj=8, layers=2)).eval()
    new = table.loss(model, ids, "cpu")
    old = _batch_loss(model, data, [table.chunks[i] for i in ids], "cpu", packed=True)
    assert float(new[0]) == pytest.approx(float(old[0]), rel=1e-5)
    assert new[1:] == old[1:]


def test_threads_do_not_stop_a_resume(slice_targets, tmp_path):
    """``threads`` says where training runs, not what it produces: a checkpoint resumes across it."""
    from weakalign.kaldi_steps.hybrid.train import _same_run

    model_cfg = HybridConfig(num_pdfs=10, cells=16, proj=8, layers=1)
    a = TrainConfig(epochs=2, lr_final=1e-4, threads=1)
    ckpt = {"model_config": model_cfg.to_dict(), "train_config": {**a.to_dict(), "threads": 2}, "targets_id": None}
    assert _same_run(ckpt, model_cfg, a)
    old = {k: v for k, v in a.to_dict().items() if k != "threads"}   # a checkpoint from before the option
    assert _same_run({**ckpt, "train_config": old}, model_cfg, a)
    assert not _same_run(ckpt, model_cfg, TrainConfig(epochs=2, lr_final=1e-4, chunk_width=80))
