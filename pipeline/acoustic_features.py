"""Kaldi-compatible MFCC and log-mel fbank, and what the stages do with them (CMVN, deltas).

Both are computed by `kaldi-native-fbank` (Kaldi's own feature code, as a library) through the
two Lhotse extractors :class:`KnfMfcc` and :class:`KnfFbank` defined here (Lhotse 1.33 has no
kaldi-native-fbank extractor of its own); the ``features`` stage
(:mod:`weakalign.pipeline.features`) runs them over a corpus.

Choices (recorded in the ``features`` stage summary as ``feature_config``):

- 25 ms window, 10 ms shift, povey window, pre-emphasis 0.97 — Kaldi's defaults.
- **snip_edges = False** (Kaldi's default is True): frame ``t`` is centred at
  ``t * 10 ms`` and an utterance of ``N`` samples has ``(N + 80) // 160`` frames,
  i.e. ``round(duration / 10 ms)`` — the count Lhotse computes from a cut's
  duration, so MFCC frames, fbank frames, GMM alignments and the E2E encoder's
  frames all line up one to one. (With ``snip_edges=True`` a 1 s utterance has
  98 frames instead of 100 and Lhotse's duration-based frame counts disagree.)
- dither = 0 (Kaldi's default is 1): features are reproducible bit for bit.
- Samples are scaled to the 16-bit integer range before extraction, as Kaldi
  reads WAV files, so the numbers equal ``compute-mfcc-feats``/``compute-fbank-feats``.
- MFCC: 23 mel bins, 13 cepstra, lifter 22, c0 replaced by the raw log energy
  (``use_energy=true``, Kaldi's default). Fbank: 80 mel bins, log power, no energy.

The GMM stages read MFCCs with :func:`load_mfcc` (per-speaker CMVN applied,
means only, as Kaldi's ``apply-cmvn`` default) and add deltas with :func:`add_deltas`.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(50, 13)).astype(np.float32)
>>> add_deltas(x).shape
(50, 39)
>>> stats = cmvn_stats(x)
>>> stats.shape, float(stats[0, -1])
((2, 14), 50.0)
>>> np.allclose(apply_cmvn(x, stats).mean(axis=0), 0, atol=1e-5)
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Iterable

import kaldi_native_fbank as knf
import numpy as np
from lhotse import CutSet
from lhotse.features.base import FeatureExtractor, register_extractor
from tqdm import tqdm

from .io import atomic_path

log = logging.getLogger("weakalign")

INT16_SCALE = 32768.0
FRAME_SHIFT_S = 0.01


@dataclass
class KnfMfccConfig:
    sampling_rate: int = 16000
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    snip_edges: bool = False
    dither: float = 0.0
    num_mel_bins: int = 23
    num_ceps: int = 13
    use_energy: bool = True
    cepstral_lifter: float = 22.0
    low_freq: float = 20.0
    high_freq: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "KnfMfccConfig":
        return KnfMfccConfig(**data)


@dataclass
class KnfFbankConfig:
    sampling_rate: int = 16000
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    snip_edges: bool = False
    dither: float = 0.0
    num_mel_bins: int = 80
    low_freq: float = 20.0
    high_freq: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "KnfFbankConfig":
        return KnfFbankConfig(**data)


def _frame_opts(opts, config) -> None:
    f = opts.frame_opts
    f.samp_freq = config.sampling_rate
    f.frame_shift_ms = config.frame_shift_ms
    f.frame_length_ms = config.frame_length_ms
    f.snip_edges = config.snip_edges
    f.dither = config.dither
    opts.mel_opts.num_bins = config.num_mel_bins
    opts.mel_opts.low_freq = config.low_freq
    opts.mel_opts.high_freq = config.high_freq


def knf_mfcc_options(config: KnfMfccConfig | None = None) -> knf.MfccOptions:
    config = config or KnfMfccConfig()
    opts = knf.MfccOptions()
    _frame_opts(opts, config)
    opts.num_ceps = config.num_ceps
    opts.use_energy = config.use_energy
    opts.cepstral_lifter = config.cepstral_lifter
    return opts


def knf_fbank_options(config: KnfFbankConfig | None = None) -> knf.FbankOptions:
    config = config or KnfFbankConfig()
    opts = knf.FbankOptions()
    _frame_opts(opts, config)
    return opts


def compute_knf(computer, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Run a kaldi-native-fbank online extractor over a whole waveform (floats in [-1, 1])."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1) * INT16_SCALE
    computer.accept_waveform(sampling_rate, samples)
    computer.input_finished()
    n = computer.num_frames_ready
    if n == 0:
        return np.zeros((0, computer.dim), dtype=np.float32)
    return computer.get_frames(list(range(n))) if hasattr(computer, "get_frames") else \
        np.stack([computer.get_frame(i) for i in range(n)])


class _KnfExtractor(FeatureExtractor):
    def _computer(self):
        raise NotImplementedError

    def extract(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        if sampling_rate != self.config.sampling_rate:
            raise ValueError(f"{self.name}: expected {self.config.sampling_rate} Hz audio, got {sampling_rate} Hz")
        return np.asarray(compute_knf(self._computer(), samples, sampling_rate), dtype=np.float32)

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift_ms / 1000.0


@register_extractor
class KnfMfcc(_KnfExtractor):
    """Kaldi MFCC (``compute-mfcc-feats``) via kaldi-native-fbank, as a Lhotse extractor."""

    name = "knf-mfcc"
    config_type = KnfMfccConfig

    def _computer(self):
        return knf.OnlineMfcc(knf_mfcc_options(self.config))

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_ceps


@register_extractor
class KnfFbank(_KnfExtractor):
    """Kaldi log-mel filterbank (``compute-fbank-feats``) via kaldi-native-fbank, as a Lhotse extractor."""

    name = "knf-fbank"
    config_type = KnfFbankConfig

    def _computer(self):
        return knf.OnlineFbank(knf_fbank_options(self.config))

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins


# ---------------------------------------------------------------- CMVN and deltas (Kaldi semantics)

def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """Kaldi ``compute-cmvn-stats`` layout: 2 x (D+1) float64; row 0 sums + count, row 1 sums of squares + 0."""
    return np.asarray(knf.compute_cmvn_stats(np.ascontiguousarray(feats, dtype=np.float32)), dtype=np.float64)


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Kaldi ``apply-cmvn`` (default: means only) of ``feats`` (T x D) with ``stats`` (2 x D+1)."""
    opts = knf.CmvnOptions()
    opts.norm_vars = norm_vars
    return np.asarray(knf.apply_cmvn(np.asarray(stats, dtype=np.float64), opts,
                                     np.ascontiguousarray(feats, dtype=np.float32)))


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi ``add-deltas``: ``[x, Δx, Δ²x]`` (T x D(order+1)), edge frames replicated."""
    opts = knf.DeltaOptions()
    opts.order = order
    opts.window = window
    return np.asarray(knf.compute_deltas(opts, np.ascontiguousarray(feats, dtype=np.float32)))


def read_cmvn(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Speaker → 2 x (D+1) CMVN stats from a Kaldi archive (``cmvn_<split>.ark``)."""
    import kaldiio

    return {spk: np.asarray(m, dtype=np.float64) for spk, m in kaldiio.load_ark(str(path))}


def write_cmvn(path: str | os.PathLike, stats: dict[str, np.ndarray]) -> None:
    import kaldiio

    with atomic_path(path) as tmp:
        kaldiio.save_ark(str(tmp), {spk: np.asarray(stats[spk], dtype=np.float64) for spk in sorted(stats)})


def load_mfcc(cut, cmvn: dict[str, np.ndarray], norm_vars: bool = False) -> np.ndarray:
    """The cut's stored MFCCs with its speaker's CMVN applied (T x 13, float32)."""
    speaker = cut.supervisions[0].speaker
    if speaker not in cmvn:
        raise KeyError(f"{cut.id}: no CMVN statistics for speaker {speaker!r}")
    return apply_cmvn(cut.load_features(), cmvn[speaker], norm_vars=norm_vars)


def speaker_cmvn_stats(speaker_feats: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-speaker sums of :func:`cmvn_stats` over ``(speaker, feats)`` pairs (``compute-cmvn-stats --spk2utt``)."""
    stats: dict[str, np.ndarray] = {}
    for spk, feats in speaker_feats:
        s = cmvn_stats(feats)
        stats[spk] = stats[spk] + s if spk in stats else s
    return stats


def speaker_cmvn(cuts: Iterable, desc: str = "CMVN stats") -> dict[str, np.ndarray]:
    """Per-speaker sums over all of each speaker's cuts (what ``compute-cmvn-stats --spk2utt`` gives)."""
    return speaker_cmvn_stats((cut.supervisions[0].speaker, cut.load_features())
                              for cut in tqdm(cuts, desc=desc, leave=False))


def global_mean_std(cuts: Iterable, desc: str = "fbank stats") -> dict:
    total = None
    for cut in tqdm(cuts, desc=desc, leave=False):
        s = cmvn_stats(cut.load_features())
        total = s if total is None else total + s
    if total is None:
        raise ValueError("no train cuts for the global fbank statistics")
    return mean_std_from_stats(total)


def mean_std_from_stats(total: np.ndarray) -> dict:
    """``{"mean", "std", "frames"}`` (the form of ``global_cmvn.json``) from summed :func:`cmvn_stats`."""
    n = total[0, -1]
    mean = total[0, :-1] / n
    var = np.maximum(total[1, :-1] / n - mean ** 2, 1e-10)
    return {"mean": mean.tolist(), "std": np.sqrt(var).tolist(), "frames": int(n)}


@contextlib.contextmanager
def sphere_readable(cut_sets: Iterable[CutSet]):
    """Let Lhotse read ``.sph`` sources through libsndfile when ``sph2pipe`` is missing.

    Set through the environment so that Lhotse's worker processes inherit it.
    """
    has_sph = any(str(s.source).lower().endswith(".sph") for cuts in cut_sets for c in cuts if c.has_recording
                  for s in c.recording.sources)
    if not has_sph or shutil.which("sph2pipe"):
        yield
        return
    from lhotse.audio.backend import get_current_audio_backend, set_current_audio_backend

    log.info("no sph2pipe on PATH: reading SPHERE audio with libsndfile (uncompressed SPHERE only)")
    old_env, old_backend = os.environ.get("LHOTSE_AUDIO_BACKEND"), get_current_audio_backend()
    os.environ["LHOTSE_AUDIO_BACKEND"] = "LibsndfileBackend"
    set_current_audio_backend("LibsndfileBackend")
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("LHOTSE_AUDIO_BACKEND", None)
        else:
            os.environ["LHOTSE_AUDIO_BACKEND"] = old_env
        set_current_audio_backend(old_backend)
