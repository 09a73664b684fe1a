"""The alignment loader: 40 ms label lengths and frame positions match the E2E encoder."""

import numpy as np
import pytest
import torch
from lhotse import load_manifest

from weakalign.align.info import run_ids
from weakalign.align.loader import (collate_alignments, load_cut_labels, subsample_labels, subsampled_length,
                                    subsampled_lengths, window_centres, window_label_distribution)
from weakalign.e2e.encoder import BLSTMEncoder, Conv2dSubsampling


def receptive_window(subsampling: Conv2dSubsampling, num_frames: int, j: int) -> tuple[int, int]:
    """First and last input frame that output frame ``j`` of the real conv stack depends on (autograd)."""
    conv = subsampling.conv
    with torch.no_grad():
        for m in conv:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0)   # positive weights and inputs: every ReLU passes its gradient
                m.bias.zero_()
    x = torch.ones(1, 1, num_frames, 80, requires_grad=True)
    conv(x)[0, :, j].sum().backward()
    frames = torch.nonzero(x.grad[0, 0].abs().sum(dim=1)).flatten()
    return int(frames.min()), int(frames.max())


@pytest.mark.parametrize("num_frames", [7, 8, 10, 11, 31, 64])
def test_subsampled_labels_sit_at_receptive_window_centres(num_frames):
    sub = Conv2dSubsampling(80, 2, 4)
    out_len = sub(torch.zeros(1, num_frames, 80), torch.tensor([num_frames]))[0].shape[1]
    assert out_len == subsampled_length(num_frames)
    labels = np.arange(num_frames) * 10 + 5          # every frame a distinct label
    got = subsample_labels(labels)
    assert len(got) == out_len
    for j in range(out_len):
        first, last = receptive_window(sub, num_frames, j)
        assert last - first == 6                     # two k=3, s=2 convs: 7 input frames
        assert (first + last) % 2 == 0
        assert got[j] == labels[(first + last) // 2], f"output {j}: window {first}..{last}"


def test_frame_rate_bugs_are_caught():
    labels = np.arange(40)
    centres = [labels[(a + b) // 2] for a, b in
               (receptive_window(Conv2dSubsampling(80, 2, 4), 40, j) for j in range(subsampled_length(40)))]
    assert subsample_labels(labels).tolist() == centres
    # What a buggy subsampling would give: same length, wrong frames.
    assert labels[::4][: len(centres)].tolist() != centres
    assert labels[2::4][: len(centres)].tolist() != centres


def test_label_lengths_equal_encoder_lengths_on_real_cuts(an4_slice):
    torch.manual_seed(0)
    encoder = BLSTMEncoder(idim=80, conv_channels=2, hidden=4, proj=4, num_layers=1).eval()
    cuts = load_manifest(an4_slice.fbank_cuts("train")) + load_manifest(an4_slice.fbank_cuts("dev"))
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    assert len(feats) >= 60
    labels = [np.arange(f.shape[0]) for f in feats]   # one label per real 10 ms frame
    for cut, f, lab in zip(cuts, feats, labels):
        assert f.shape[0] == cut.num_frames
        with torch.no_grad():
            out = encoder(f[None], torch.tensor([f.shape[0]]))
        assert out.out.shape[1] == out.lens.item() == len(subsample_labels(lab)), cut.id
    # The same in padded batches of 8: per-row lengths and -100 beyond them.
    for start in range(0, len(feats), 8):
        rows, lab_rows = feats[start:start + 8], labels[start:start + 8]
        lens = torch.tensor([r.shape[0] for r in rows])
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        with torch.no_grad():
            out = encoder(x, lens)
        padded, lab_lens = collate_alignments(lab_rows)
        assert torch.equal(lab_lens, lens)
        sub = subsample_labels(padded, lab_lens)
        assert sub.shape[1] == out.out.shape[1]
        assert torch.equal((sub != -100).sum(1), out.lens)
        for i, lab in enumerate(lab_rows):
            single = torch.as_tensor(subsample_labels(lab))
            assert torch.equal(sub[i, : len(single)], single)


def test_collate_pads_with_ignore_index_and_checks_integers():
    padded, lens = collate_alignments([np.array([3, 1, 2]), np.array([7.0]), np.array([], dtype=np.int64)])
    assert padded.dtype == torch.long
    assert padded.tolist() == [[3, 1, 2], [7, -100, -100], [-100, -100, -100]]
    assert lens.tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="non-integer"):
        collate_alignments([np.array([0.5, 1.0])])


def test_length_helpers_agree():
    t = torch.arange(0, 300)
    assert subsampled_lengths(t).tolist() == [subsampled_length(int(n)) for n in t]
    assert window_centres(31).tolist() == [3, 7, 11, 15, 19, 23, 27]


# ---------------------------------------------------------------- centre / majority / soft targets

PAD = -100


def windows_by_hand(row: list, length: int) -> list[list]:
    """The valid labels of each output frame's window 4j .. 4j+6, by plain indexing."""
    return [[v for v in row[4 * j: 4 * j + 7] if v != PAD] for j in range(subsampled_length(length))]


def majority_by_hand(window: list, centre) -> int:
    """Most frequent label; ties: the centre's label if tied, else the tied label seen first."""
    if not window:
        return PAD
    counts = {v: window.count(v) for v in window}
    tied = [v for v in window if counts[v] == max(counts.values())]
    return centre if centre in tied else tied[0]


def random_padded_batch(seed: int, num_classes: int = 5):
    """Rows of short random runs (so windows hold ties), random lengths, a few pad labels inside rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(6):
        row = np.repeat(rng.integers(0, num_classes, 40), rng.integers(1, 4, 40))[: rng.integers(0, 60)]
        row[rng.random(len(row)) < 0.05] = PAD
        rows.append(row)
    return collate_alignments(rows)


def old_centre_subsampling(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """subsample_labels as it was before the other modes existed (the reference for ``centre``)."""
    out_len = subsampled_length(x.shape[1])
    out = x[:, 3::4][:, :out_len].clone()
    out[~(torch.arange(out_len)[None, :] < subsampled_lengths(lengths)[:, None])] = PAD
    return out


def test_centre_is_the_default_and_unchanged():
    for seed in range(5):
        x, lens = random_padded_batch(seed)
        assert torch.equal(subsample_labels(x, lens), old_centre_subsampling(x, lens))
        assert torch.equal(subsample_labels(x, lens, mode="centre"), old_centre_subsampling(x, lens))
    row = np.arange(23, dtype=np.int32)
    got = subsample_labels(row, mode="centre")
    assert isinstance(got, np.ndarray) and got.dtype == np.int32 and got.tolist() == [3, 7, 11, 15, 19]
    with pytest.raises(ValueError, match="centre.*majority"):
        subsample_labels(row, mode="median")


@pytest.mark.parametrize("window, expected", [
    ([1, 1, 1, 1, 2, 2, 3], 1),        # plain majority, not the centre's label
    ([2, 2, 3, 3, 3, 1, 1], 3),        # majority at the centre
    ([9, 9, 8, 5, 5, 6, 6], 5),        # three-way tie, the centre's 5 among them: 5, not the earlier 9
    ([8, 8, 3, 7, 3, 1, 2], 8),        # tie without the centre (7): the earliest (8), not the smallest (3)
    ([4, 6, 6, 7, 4, 1, 1], 4),        # three-way tie without the centre: first seen at frame 0
    ([2, 2, PAD, PAD, PAD, 3, 3], 2),  # pad frames don't vote; the pad centre can't win a tie
    ([PAD, PAD, PAD, 1, PAD, PAD, 0], 1),
    ([PAD] * 7, PAD),                  # nothing valid: ignored by the loss
])
def test_majority_known_answers(window, expected):
    row = torch.tensor([window])
    assert subsample_labels(row, torch.tensor([7]), mode="majority").tolist() == [[expected]]
    assert majority_by_hand([v for v in window if v != PAD], window[3]) == expected   # the reference agrees


def test_majority_on_a_padded_batch():
    rows = torch.tensor([[0, 0, 0, 1, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
                         [3, 3, 3, 4, 4, 3, 1, 1, 1, 1, 1, PAD, PAD, PAD, PAD],
                         [5, 5, 5, 5, 5, 5, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD]])
    assert subsample_labels(rows, mode="majority").tolist() == [[0, 2, 2], [3, 1, PAD], [PAD, PAD, PAD]]
    assert subsample_labels(rows).tolist() == [[1, 2, 2], [4, 1, PAD], [PAD, PAD, PAD]]
    # Explicit lengths win over the pad count: row 0 cut to 10 frames keeps one output frame.
    assert subsample_labels(rows, torch.tensor([10, 11, 6]), mode="majority").tolist() == \
        [[0, PAD, PAD], [3, 1, PAD], [PAD, PAD, PAD]]
    # numpy in, numpy out; 1-D too.
    got = subsample_labels(rows[0].numpy(), mode="majority")
    assert isinstance(got, np.ndarray) and got.tolist() == [0, 2, 2]
    assert subsample_labels(np.array([1, 2, 3]), mode="majority").tolist() == []


def test_majority_matches_a_frame_by_frame_count_on_random_batches():
    for seed in range(20):
        x, lens = random_padded_batch(seed)
        got = subsample_labels(x, lens, mode="majority")
        assert got.shape == (x.shape[0], subsampled_length(x.shape[1]))
        for i, (row, n) in enumerate(zip(x.tolist(), lens.tolist())):
            expected = [majority_by_hand(w, row[4 * j + 3]) for j, w in enumerate(windows_by_hand(row, n))]
            assert got[i].tolist() == expected + [PAD] * (got.shape[1] - len(expected)), (seed, i)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_run_between_two_centres_is_lost_by_centre_and_kept_by_soft(k):
    """A k-frame run at frames 4 .. 3+k (between the centres 3 and 7) of an 11-frame row."""
    row = [0, 0, 0, 0] + [5] * k + [2] * (7 - k)
    assert 5 not in subsample_labels(np.array(row)).tolist()
    assert 5 not in subsample_labels(np.array(row), mode="majority").tolist()
    dist, valid = window_label_distribution(torch.tensor([row]), torch.tensor([11]), num_classes=6)
    assert valid.tolist() == [[True, True]]
    assert dist[0, :, 5].tolist() == pytest.approx([k / 7, k / 7])     # both windows see all k frames
    assert dist[0, 0].tolist() == pytest.approx([4 / 7, 0, (3 - k) / 7, 0, 0, k / 7])
    assert dist[0, 1].tolist() == pytest.approx([0, 0, (7 - k) / 7, 0, 0, k / 7])


def test_soft_distribution_is_the_window_histogram():
    for seed in range(10):
        x, lens = random_padded_batch(seed)
        dist, valid = window_label_distribution(x, lens, num_classes=5)
        assert dist.dtype == torch.float32 and dist.shape == (x.shape[0], subsampled_length(x.shape[1]), 5)
        assert torch.allclose(dist.sum(-1)[valid], torch.ones(int(valid.sum())))
        assert dist[~valid].abs().sum().item() == 0.0         # beyond the length and all-pad windows
        assert torch.equal(valid, subsample_labels(x, lens, mode="majority") != PAD)
        for i, (row, n) in enumerate(zip(x.tolist(), lens.tolist())):
            for j, w in enumerate(windows_by_hand(row, n)):
                hist = np.bincount(w, minlength=5) / max(len(w), 1)
                assert dist[i, j].tolist() == pytest.approx(hist.tolist()), (seed, i, j)
            assert not valid[i, subsampled_length(n):].any()
    # 1-D: (T', K) and (T',).
    dist, valid = window_label_distribution(np.array([1] * 11), num_classes=2)
    assert dist.tolist() == [[0.0, 1.0], [0.0, 1.0]] and valid.tolist() == [True, True]


def test_soft_distribution_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="outside 0..2"):
        window_label_distribution(torch.tensor([[0, 1, 2, 3, 0, 0, 0]]), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        window_label_distribution(torch.tensor([[0, 1, 2]]))


def test_targets_on_real_exported_senones(an4_slice_exported):
    """The real tri1 senones of the exported slice: majority labels come from their window, and
    every senone run that centre subsampling drops still gets soft-target mass."""
    cuts = load_manifest(an4_slice_exported.ali_cuts("train"))
    num_senones = cuts[0].custom["num_senones"]
    labels = [load_cut_labels(c) for c in cuts]
    dropped_runs = 0
    for cut, lab in zip(cuts, labels):
        n_out = subsampled_length(len(lab))
        majority = subsample_labels(lab, mode="majority")
        dist, valid = window_label_distribution(lab, num_classes=num_senones)
        assert len(majority) == len(dist) == n_out and valid.all()
        for j in range(n_out):
            window = lab[4 * j: 4 * j + 7]
            counts = np.bincount(window, minlength=num_senones)
            assert counts[majority[j]] == counts.max(), (cut.id, j)
            assert dist[j].numpy() == pytest.approx(counts / 7), (cut.id, j)
        kept = set(subsample_labels(run_ids(lab)).tolist())
        runs = run_ids(lab)
        last_seen = 4 * (n_out - 1) + 6        # frames after the last window reach no output frame
        for r in set(range(int(runs[-1]) + 1)) - kept:
            frames = np.flatnonzero(runs == r)
            if frames[0] > last_seen:
                continue
            dropped_runs += 1
            senone = lab[frames[0]]
            overlapping = [j for j in range(n_out) if 4 * j <= frames[-1] and frames[0] <= 4 * j + 6]
            assert overlapping, (cut.id, r)
            for j in overlapping:
                inside = sum(4 * j <= f <= 4 * j + 6 for f in frames)
                assert dist[j, senone].item() >= inside / 7 - 1e-6, (cut.id, r, j)
    assert dropped_runs >= 1
    # Batched with padding: the same labels row by row.
    padded, lens = collate_alignments(labels[:8])
    batch_majority = subsample_labels(padded, lens, mode="majority")
    batch_dist, batch_valid = window_label_distribution(padded, lens, num_senones)
    for i, lab in enumerate(labels[:8]):
        n = subsampled_length(len(lab))
        assert batch_majority[i, :n].tolist() == subsample_labels(lab, mode="majority").tolist()
        assert (batch_majority[i, n:] == PAD).all() and not batch_valid[i, n:].any()
        assert torch.equal(batch_dist[i, :n], window_label_distribution(lab, num_classes=num_senones)[0])
