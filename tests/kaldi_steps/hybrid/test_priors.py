"""Pdf priors of the hybrid model: smoothed, floored, normalised (weakalign.kaldi_steps.hybrid.priors)."""

import numpy as np
import pytest

from weakalign.kaldi_steps.hybrid.realign import tid2pdf_array
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
from weakalign.kaldi_steps.hybrid.priors import load_priors, pdf_counts, priors_from_counts, save_priors


def test_priors_sum_to_one_and_are_floored_on_hand_counts():
    counts = np.array([0, 1000, 3, 0, 50])
    floor = 0.01
    p = priors_from_counts(counts, floor=floor)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    # add-one smoothing: unseen pdfs get a finite, positive prior; order follows the counts
    assert (p > 0).all() and p[1] > p[4] > p[2]
    # floor applied before renormalising: never below floor / (1 + n * floor)
    assert p.min() >= floor / (1 + len(counts) * floor)
    # the rare pdfs (smoothed frequency below the floor) were all lifted to the same floored value
    assert p[0] == p[2] == p[3] > (3 + 1) / (counts.sum() + len(counts))
    # without a floor, add-one smoothing alone keeps the order of the counts
    q = priors_from_counts(counts, floor=0.0)
    assert q[1] > q[4] > q[2] > q[0] == q[3] > 0 and q.sum() == pytest.approx(1.0, abs=1e-12)


def test_priors_reject_bad_input():
    with pytest.raises(ValueError):
        priors_from_counts(np.array([1, -1]))
    with pytest.raises(ValueError):
        priors_from_counts(np.array([1, 2]), floor=0.6)   # a floor above 1/n cannot sum to one
    with pytest.raises(ValueError, match="out of range"):
        pdf_counts([np.array([0, 5])], 3)


def test_priors_from_real_tri1_alignments(an4_slice_tri1, tmp_path):
    ws = an4_slice_tri1
    trans_model, _ = read_model(ws.exp / "tri1_ali" / "final.mdl")
    tid2pdf = tid2pdf_array(trans_model)
    alis = read_ali_dir(ws.exp / "tri1_ali")
    counts = pdf_counts((tid2pdf[a] for a in alis.values()), trans_model.num_pdfs)
    assert counts.sum() == sum(len(a) for a in alis.values())
    floor = 1e-4
    p = priors_from_counts(counts, floor=floor)
    assert p.shape == (trans_model.num_pdfs,)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert p.min() >= floor / (1 + len(p) * floor)
    # the most frequent pdf (silence) has the largest prior
    assert p.argmax() == counts.argmax()
    save_priors(tmp_path, p, counts)
    assert np.array_equal(load_priors(tmp_path), p)
    assert np.array_equal(np.load(tmp_path / "pdf_counts.npy"), counts)
