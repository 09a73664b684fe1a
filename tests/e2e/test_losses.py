"""Loss terms on hand-made numbers: smoothed CE equals its formula, padding is ignored."""

import math

import pytest
import torch
import torch.nn.functional as F

from weakalign.e2e.losses import decoder_io, smoothed_ce, soft_target_ce

# Two utterances, 3 frames, 4 classes; the second has one padded frame.
LOGITS = torch.tensor([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [1.0, 1.0, 1.0, 1.0]],
                       [[-2.0, 0.0, 0.5, 4.0], [0.3, -0.3, 0.0, 1.5], [9.0, -9.0, 5.0, 7.0]]])
TARGETS = torch.tensor([[0, 2, 1], [3, 1, -100]])


def formula(logits, targets, m):
    """-sum_k [(1-m) 1{k=y} + m/K] log softmax_k, averaged over the non-padded frames, by hand."""
    total, n = 0.0, 0
    K = logits.shape[-1]
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = int(targets[b, t])
            if y == -100:
                continue
            row = [float(v) for v in logits[b, t]]
            lse = math.log(sum(math.exp(v) for v in row))
            logp = [v - lse for v in row]
            total += -sum(((1 - m) * (k == y) + m / K) * logp[k] for k in range(K))
            n += 1
    return total / n


@pytest.mark.parametrize("m", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_smoothed_ce_equals_its_formula(m):
    loss, _ = smoothed_ce(LOGITS, TARGETS, m)
    assert loss.item() == pytest.approx(formula(LOGITS, TARGETS, m), rel=1e-6)


def test_m0_is_one_hot_ce_and_m1_is_uniform_ce():
    logp = torch.log_softmax(LOGITS, dim=-1)
    valid = TARGETS != -100
    onehot = -logp[valid].gather(1, TARGETS[valid][:, None]).mean()
    uniform = -logp[valid].mean()
    assert smoothed_ce(LOGITS, TARGETS, 0.0)[0].item() == pytest.approx(onehot.item(), rel=1e-6)
    assert smoothed_ce(LOGITS, TARGETS, 1.0)[0].item() == pytest.approx(uniform.item(), rel=1e-6)
    # Smoothed CE = (1-m)·one-hot CE + m·uniform CE: the one-hot baseline with weight (1-m)·w
    # is exactly the one-hot part of the smoothed loss with weight w.
    m, w = 0.5, 1.0
    smoothed = smoothed_ce(LOGITS, TARGETS, m)[0]
    assert (w * smoothed).item() == pytest.approx(((1 - m) * w * onehot + m * w * uniform).item(), rel=1e-6)


def test_padded_frames_are_ignored():
    changed = LOGITS.clone()
    changed[1, 2] = torch.tensor([-50.0, 80.0, 3.0, 0.0])   # the padded frame
    for m in (0.0, 0.5):
        assert smoothed_ce(changed, TARGETS, m)[0].item() == smoothed_ce(LOGITS, TARGETS, m)[0].item()
    # ... but a real frame does count.
    changed[1, 1] = torch.tensor([-50.0, 80.0, 3.0, 0.0])
    assert smoothed_ce(changed, TARGETS, 0.5)[0].item() != smoothed_ce(LOGITS, TARGETS, 0.5)[0].item()
    # Gradient reaches no padded frame.
    x = LOGITS.clone().requires_grad_(True)
    smoothed_ce(x, TARGETS, 0.5)[0].backward()
    assert x.grad[1, 2].abs().sum().item() == 0.0
    assert x.grad[1, 1].abs().sum().item() > 0.0


def test_frame_accuracy_counts_only_valid_frames():
    _, acc = smoothed_ce(LOGITS, TARGETS, 0.5)
    # argmax per valid frame: [0, 2, 0(tie->0)] vs [0, 2, 1]; [3, 3] vs [3, 1] -> 3 of 5
    assert acc.item() == pytest.approx(3 / 5)


def test_all_padding_gives_zero_loss_with_a_graph():
    x = LOGITS.clone().requires_grad_(True)
    loss, _ = smoothed_ce(x, torch.full_like(TARGETS, -100), 0.5)
    assert loss.item() == 0.0
    loss.backward()


def test_decoder_io_shifts_with_sos_and_eos():
    ys_in, ys_out, lens = decoder_io([[5, 6, 7], [8]], sos=9, eos=9)
    assert ys_in.tolist() == [[9, 5, 6, 7], [9, 8, 9, 9]]
    assert ys_out.tolist() == [[5, 6, 7, 9], [8, 9, -100, -100]]
    assert lens.tolist() == [4, 2]


# ---------------------------------------------------------------- soft targets

VALID = TARGETS != -100
ONE_HOT = F.one_hot(TARGETS.clamp(min=0), 4).float() * VALID[..., None]   # padded frame: all zero


@pytest.mark.parametrize("m", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_soft_ce_of_one_hot_targets_is_label_smoothed_cross_entropy(m):
    got = soft_target_ce(LOGITS, ONE_HOT, VALID, m)
    expected = F.cross_entropy(LOGITS.reshape(-1, 4), TARGETS.reshape(-1), ignore_index=-100, label_smoothing=m)
    # Same terms in the same order as PyTorch's label smoothing: equal up to float32 rounding.
    assert torch.allclose(got, expected, rtol=1e-6, atol=0.0)
    assert got.item() == pytest.approx(smoothed_ce(LOGITS, TARGETS, m)[0].item(), rel=1e-6)
    assert got.item() == pytest.approx(formula(LOGITS, TARGETS, m), rel=1e-6)


def test_soft_ce_of_one_hot_targets_at_senone_scale():
    torch.manual_seed(0)
    logits = torch.randn(3, 50, 1000) * 3
    targets = torch.randint(0, 1000, (3, 50))
    targets[1, 30:] = -100
    valid = targets != -100
    one_hot = F.one_hot(targets.clamp(min=0), 1000).float() * valid[..., None]
    for m in (0.0, 0.5):
        expected = F.cross_entropy(logits.reshape(-1, 1000), targets.reshape(-1), label_smoothing=m)
        assert torch.allclose(soft_target_ce(logits, one_hot, valid, m), expected, rtol=1e-6, atol=0.0)


def soft_formula(logits, dist, valid, m):
    """-sum_k [(1-m) q_k + m/K] log softmax_k, averaged over the valid frames, by hand."""
    total, n = 0.0, 0
    K = logits.shape[-1]
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if not valid[b, t]:
                continue
            row = [float(v) for v in logits[b, t]]
            lse = math.log(sum(math.exp(v) for v in row))
            total += -sum(((1 - m) * float(dist[b, t, k]) + m / K) * (row[k] - lse) for k in range(K))
            n += 1
    return total / n


def test_soft_ce_equals_its_formula_and_ignores_invalid_frames():
    dist = torch.tensor([[[3, 1, 0, 3], [0, 0, 7, 0], [1, 2, 2, 2]],
                         [[0, 0, 2, 5], [4, 1, 1, 1], [9, 9, 9, 9]]]) / 7.0   # the last frame is invalid
    for m in (0.0, 0.5):
        loss = soft_target_ce(LOGITS, dist, VALID, m)
        assert loss.item() == pytest.approx(soft_formula(LOGITS, dist, VALID, m), rel=1e-6)
    x = LOGITS.clone().requires_grad_(True)
    soft_target_ce(x, dist, VALID, 0.5).backward()
    assert x.grad[1, 2].abs().sum().item() == 0.0 and x.grad[1, 1].abs().sum().item() > 0.0
    # A soft target differs from the one-hot of its argmax.
    assert soft_target_ce(LOGITS, dist, VALID, 0.0).item() != pytest.approx(
        soft_target_ce(LOGITS, F.one_hot(dist.argmax(-1), 4).float(), VALID, 0.0).item())


def test_soft_ce_with_nothing_valid_is_zero_with_a_graph():
    x = LOGITS.clone().requires_grad_(True)
    loss = soft_target_ce(x, ONE_HOT, torch.zeros_like(VALID), 0.5)
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="disagree"):
        soft_target_ce(LOGITS, ONE_HOT[:, :2], VALID, 0.5)
