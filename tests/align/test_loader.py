"""The alignment loader: 40 ms label lengths and frame positions match the E2E encoder."""

import numpy as np
import pytest
import torch
from lhotse import load_manifest

from weakalign.align.loader import (collate_alignments, subsample_labels, subsampled_length,
                                    subsampled_lengths, window_centres)
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
