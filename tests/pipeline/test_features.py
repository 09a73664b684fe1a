"""The ``features`` stage and the Kaldi-style helpers, on the real AN4 slice."""

import json

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf
from lhotse import CutSet

from weakalign.pipeline.features import (add_deltas, apply_cmvn, cmvn_stats, knf_mfcc_options, load_mfcc,
                                          read_cmvn)
from weakalign.pipeline.workspace import SPLITS


def _expected_frames(num_samples: int) -> int:
    # snip_edges=False: one frame per 10 ms shift, rounded (Kaldi's NumFrames without snipping).
    return (num_samples + 80) // 160


def test_mfcc_and_fbank_shapes_and_frame_counts(an4_slice):
    ws = an4_slice
    for split in SPLITS:
        mfcc = CutSet.from_file(ws.mfcc_cuts(split))
        fbank = CutSet.from_file(ws.fbank_cuts(split))
        sups = {s.id for s in __import__("lhotse").SupervisionSet.from_file(ws.manifest("supervisions", split))}
        assert set(mfcc.ids) == set(fbank.ids) == sups
        for m, f in zip(mfcc, fbank):
            assert m.id == f.id == m.supervisions[0].id
            num_samples = m.recording.num_samples
            feats_m, feats_f = m.load_features(), f.load_features()
            assert feats_m.shape == (_expected_frames(num_samples), 13), m.id
            assert feats_f.shape == (_expected_frames(num_samples), 80), f.id
            assert m.num_frames == feats_m.shape[0]
            assert abs(feats_m.shape[0] - m.duration / 0.01) <= 1


def test_stored_mfcc_equal_kaldi_native_fbank_on_int16_samples(an4_slice):
    cut = CutSet.from_file(an4_slice.mfcc_cuts("dev"))[0]
    samples, sr = sf.read(cut.recording.sources[0].source, dtype="int16")
    opts = knf_mfcc_options()
    computer = knf.OnlineMfcc(opts)
    computer.accept_waveform(sr, samples.astype(np.float32))
    computer.input_finished()
    direct = np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])
    stored = cut.load_features()
    assert stored.shape == direct.shape
    # lilcom storage is lossy at ~1e-3 relative precision.
    assert np.allclose(stored, direct, atol=0.05, rtol=0.01)


def test_cmvn_archive_has_kaldi_layout_per_speaker(an4_slice):
    ws = an4_slice
    cuts = CutSet.from_file(ws.mfcc_cuts("train"))
    cmvn = read_cmvn(ws.cmvn("train"))
    speakers = {c.supervisions[0].speaker for c in cuts}
    assert set(cmvn) == speakers and len(speakers) >= 6
    spk = sorted(speakers)[0]
    feats = np.concatenate([c.load_features() for c in cuts if c.supervisions[0].speaker == spk])
    stats = cmvn[spk]
    assert stats.shape == (2, 14) and stats.dtype == np.float64
    assert stats[0, 13] == len(feats) and stats[1, 13] == 0
    assert np.allclose(stats[0, :13], feats.sum(axis=0, dtype=np.float64), rtol=1e-4)
    assert np.allclose(stats[1, :13], (feats.astype(np.float64) ** 2).sum(axis=0), rtol=1e-4)
    normed = np.concatenate([load_mfcc(c, cmvn) for c in cuts if c.supervisions[0].speaker == spk])
    assert np.allclose(normed.mean(axis=0), 0, atol=1e-3)
    assert not np.allclose(normed.std(axis=0), 1, atol=0.05)  # means only, like apply-cmvn's default


def test_apply_cmvn_norm_vars_and_deltas_follow_kaldi_formulas():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(40, 5)).astype(np.float32)
    y = apply_cmvn(x, cmvn_stats(x), norm_vars=True)
    assert np.allclose(y.mean(axis=0), 0, atol=1e-4) and np.allclose(y.std(axis=0), 1, atol=1e-3)
    d = add_deltas(x, order=2, window=2)
    assert d.shape == (40, 15)
    # First-order delta at an inner frame: sum_j j*x[t+j] / (2 * (1 + 4)).
    t = 10
    expected = sum(j * x[t + j] for j in range(-2, 3)) / 10.0
    assert np.allclose(d[t, 5:10], expected, atol=1e-5)
    assert np.allclose(d[:, :5], x)


def test_global_fbank_stats_match_train_features(an4_slice):
    ws = an4_slice
    stats = json.loads(ws.fbank_stats.read_text())
    feats = np.concatenate([c.load_features() for c in CutSet.from_file(ws.fbank_cuts("train"))])
    assert stats["frames"] == len(feats) and len(stats["mean"]) == len(stats["std"]) == 80
    assert np.allclose(stats["mean"], feats.mean(axis=0), atol=1e-3)
    assert np.allclose(stats["std"], feats.std(axis=0), rtol=1e-3)
