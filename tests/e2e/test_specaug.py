"""SpecAugment's masks and time warp: where they fall, how wide, and what they leave alone."""

import pytest
import torch

from weakalign.e2e.specaug import SpecAugment

LENS = torch.tensor([100, 60, 25])


def _masked(aug: SpecAugment, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return aug(torch.ones(len(LENS), 100, 80), LENS) == 0      # (B, T, F): True where masked


def _runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    runs, n = [], 0
    for f in flags.tolist() + [False]:
        if f:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


@pytest.mark.parametrize("seed", range(20))
def test_masks_are_bands_and_frame_spans_of_bounded_width_inside_the_utterance(seed):
    aug = SpecAugment(num_freq_masks=2, freq_mask_width=27, num_time_masks=2, time_mask_width=40,
                      time_mask_max_ratio=0.2)
    masked = _masked(aug, seed)
    for b, n in enumerate(LENS.tolist()):
        m = masked[b, :n]
        freq_bands = m.all(dim=0)              # masked in every frame: a frequency mask
        frames = m.all(dim=1)                  # masked in every bin: a time mask
        # Every masked cell is explained by one of the two kinds of mask.
        assert torch.equal(m, freq_bands[None, :] | frames[:, None])
        assert sum(_runs(freq_bands)) <= 2 * 27 and len(_runs(freq_bands)) <= 2
        max_width = min(40, int(n * 0.2))
        assert sum(_runs(frames)) <= 2 * max_width and len(_runs(frames)) <= 2
        # Nothing beyond the utterance's length is a time mask (the padding's frames stay as they were).
        assert not masked[b, n:].all(dim=1).any()


def test_masks_are_drawn_per_utterance_and_per_call():
    aug = SpecAugment(num_freq_masks=2, freq_mask_width=27, num_time_masks=2, time_mask_width=40)
    draws = [_masked(aug, seed) for seed in range(10)]
    fractions = torch.stack([d[:, :25].float().mean(dim=(1, 2)) for d in draws])   # (draws, B)
    assert (fractions > 0).float().mean() > 0.8          # it masks something almost every time
    assert len({round(f, 4) for f in fractions.flatten().tolist()}) > 20   # and not the same thing
    assert not torch.equal(draws[0][0, :25], draws[0][1, :25])


@pytest.mark.parametrize("seed", range(10))
def test_time_warp_keeps_the_length_and_the_order_of_frames(seed):
    torch.manual_seed(seed)
    aug = SpecAugment(num_freq_masks=0, num_time_masks=0, time_warp=5)
    ramp = torch.arange(100, dtype=torch.float)[None, :, None].expand(len(LENS), 100, 4).clone()
    out = aug(ramp, LENS)
    assert out.shape == ramp.shape
    for b, n in enumerate(LENS.tolist()):
        warped = out[b, :n, 0]
        # A warp moves frames in time by at most time_warp: still increasing, never past the utterance's
        # ends, and the padding untouched.
        assert (warped[1:] >= warped[:-1]).all()
        assert 0 <= warped[0] <= 5 and n - 1 - 5 <= warped[-1] <= n - 1
        assert ((warped - torch.arange(n)).abs() <= 5).all()
        assert torch.equal(out[b, n:], ramp[b, n:])
    changed = [not torch.equal(out[b, :n], ramp[b, :n]) for b, n in enumerate(LENS.tolist())]
    assert any(changed)


def test_time_warp_is_refused_beside_a_frame_alignment_loss():
    with pytest.raises(ValueError, match="time_warp: 0"):
        SpecAugment(time_warp=5, keep_frames_aligned=True)
