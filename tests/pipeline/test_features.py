"""The ``features`` stage and the Kaldi-style helpers, on the real AN4 slice."""

import io
import json
import shutil
from pathlib import Path

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from weakalign.pipeline.acoustic_features import (add_deltas, apply_cmvn, cmvn_stats, knf_mfcc_options, load_mfcc,
                                                  read_cmvn)
from weakalign.pipeline.features import compute_features
from weakalign.pipeline.workspace import SPLITS, Workspace


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


def _direct_mfcc(cut) -> np.ndarray:
    samples, sr = sf.read(cut.recording.sources[0].source, dtype="int16")
    computer = knf.OnlineMfcc(knf_mfcc_options())
    computer.accept_waveform(sr, samples.astype(np.float32))
    computer.input_finished()
    return np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])


def _kaldi_compressed(x: np.ndarray) -> np.ndarray:
    """``x`` through Kaldi's CompressedMatrix (kAutomaticMethod, as ``copy-feats --compress=true``), by kaldiio."""
    buf = io.BytesIO()
    kaldiio.save_ark(buf, {"u": x.astype(np.float32)}, compression_method=1)
    buf.seek(0)
    return dict(kaldiio.load_ark(buf))["u"]


def test_stored_mfcc_are_kaldi_native_fbank_as_make_mfcc_compresses_them(an4_slice):
    """The default storage is make_mfcc.sh's: Kaldi compressed matrices in a feats.ark real Kaldi
    reads (kaldiio here, an independent implementation of the format), holding the computed MFCCs
    as Kaldi's compression leaves them: what Kaldi's GMMs train on (issue #20)."""
    cuts = CutSet.from_file(an4_slice.mfcc_cuts("dev"))
    for cut in list(cuts)[:5]:
        direct, stored = _direct_mfcc(cut), cut.load_features()
        assert stored.shape == direct.shape
        # The same codes up to float rounding (now and then one code apart in a narrow column).
        diff = np.abs(stored - _kaldi_compressed(direct))
        assert (diff < 1e-4).mean() > 0.97 and diff.max() < 5e-3, cut.id
        assert np.abs(stored - direct).max() > 0.05          # lossy: 8 bits per value, not the float itself
    assert cuts[0].features.storage_type == "kaldiio"
    ark = Path(cuts[0].features.storage_path).parent / "feats.ark"
    from_kaldi_format = dict(kaldiio.load_ark(str(ark)))
    assert np.allclose(from_kaldi_format[cuts[0].features.storage_key], cuts[0].load_features(), atol=1e-4)
    with open(ark, "rb") as f:
        assert b"\0BCM " in f.read(64)                       # binary, compressed matrix (CM)


def test_lilcom_storage_keeps_the_computed_mfcc_closer(an4_slice, tmp_path):
    ws = Workspace(an4_slice.corpus, data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    shutil.copytree(an4_slice.data / "manifests", ws.data / "manifests")
    summary = compute_features(ws, nj=1, splits=["dev"], mfcc_storage="lilcom")
    assert summary["feature_config"]["mfcc_storage"] == "lilcom"
    cut = CutSet.from_file(ws.mfcc_cuts("dev"))[0]
    direct = _direct_mfcc(cut)
    assert np.allclose(cut.load_features(), direct, atol=0.05, rtol=0.01)   # lilcom: ~1e-3 relative
    with pytest.raises(ValueError, match="mfcc_storage must be one of"):
        compute_features(ws, nj=1, splits=["dev"], mfcc_storage="npy")


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
