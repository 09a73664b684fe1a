"""The ``features`` stage: Kaldi-compatible MFCC (+ per-speaker CMVN) and log-mel fbank.

Both are computed by `kaldi-native-fbank` (Kaldi's own feature code, as a
library) inside Lhotse's ``compute_and_store_features``, through the two Lhotse
extractors :class:`KnfMfcc` and :class:`KnfFbank` defined here (Lhotse 1.33 has
no kaldi-native-fbank extractor of its own), stored in lilcom chunky archives.

Choices (recorded in the stage summary as ``feature_config``):

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
- NIST SPHERE (``.sph``, TED-LIUM) audio: Lhotse reads it with the external ``sph2pipe``;
  when that is not on ``PATH`` the stage has Lhotse read through libsndfile instead
  (which reads uncompressed SPHERE; shorten-compressed SPHERE needs ``sph2pipe``).
- MFCC: 23 mel bins, 13 cepstra, lifter 22, c0 replaced by the raw log energy
  (``use_energy=true``, Kaldi's default). Fbank: 80 mel bins, log power, no energy.
- **MFCC storage** (``mfcc_storage``): ``kaldi-compressed`` (default) stores them as Kaldi's
  ``steps/make_mfcc.sh`` does, ``copy-feats --compress=true``: Kaldi compressed matrices
  (``kAutomaticMethod``; Lhotse's ``KaldiWriter``, ``feats.ark``/``feats.scp`` real Kaldi reads), so the
  GMMs train on the values Kaldi's GMMs train on. The compression is lossy (8 bits per value with
  per-column quantiles): on AN4 train, Kaldi's stored MFCCs differ from the uncompressed ones by 0.057
  on average, and from this project's compressed ones by 7e-5 (issue #20). ``lilcom`` (the stage's
  storage before) keeps them closer to the computed values. Fbank is stored with lilcom either way.

Skips, one per cut and keyed by cause: audio that does not load (``unreadable audio``, with
the backend's error; ``prepare`` only decoded the file's end) and audio that is constant
(``digital silence``: all MFCC frames identical). Such a cut is in neither feature set.

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
from pathlib import Path
from typing import Iterable

import kaldi_native_fbank as knf
import numpy as np
from lhotse import CutSet, LilcomChunkyWriter, RecordingSet, SupervisionSet
from lhotse.features.io import KaldiWriter, close_cached_file_handles
from lhotse.features.base import FeatureExtractor, register_extractor
from tqdm import tqdm

from .io import atomic_path, write_json
from .prerequisites import missing_output
from .report import SkipReport
from .workspace import Workspace

log = logging.getLogger("weakalign")

INT16_SCALE = 32768.0
FRAME_SHIFT_S = 0.01
#: Below this range (max over coefficients of max - min over frames) a cut's MFCCs are constant.
SILENCE_PTP = 1e-3


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


# ---------------------------------------------------------------- the stage

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


def supervision_cuts(ws: Workspace, split: str) -> CutSet:
    """One cut per supervision, with the supervision's id (Lhotse ``trim_to_supervisions``)."""
    recs = RecordingSet.from_file(ws.manifest("recordings", split))
    sups = SupervisionSet.from_file(ws.manifest("supervisions", split))
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(keep_overlapping=False)
    cuts = cuts.to_eager()
    bad = [c.id for c in cuts if len(c.supervisions) != 1 or c.id != c.supervisions[0].id]
    if bad:
        raise ValueError(f"{split}: cuts whose id is not their one supervision's id: {bad[:5]}")
    return cuts.to_eager()


#: The writers of ``mfcc_storage``: Kaldi's compressed matrices (kAutomaticMethod, as ``copy-feats
#: --compress=true``), or lilcom.
MFCC_STORAGE = {"kaldi-compressed": KaldiWriter, "lilcom": LilcomChunkyWriter}


def _extract(cuts: CutSet, extractor, storage: Path, nj: int, report: SkipReport, executor=None,
             storage_type=LilcomChunkyWriter) -> CutSet:
    # A rerun after a crash starts from a clean archive directory, and from no reader Lhotse keeps
    # open on the old one (its Kaldi reader caches a feats.scp's keys for the life of the process).
    for old in (storage, storage.with_name(storage.name + ".lca")):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    close_cached_file_handles()
    storage.parent.mkdir(parents=True, exist_ok=True)
    nj = max(1, min(nj, len(cuts)))
    with_feats = cuts.compute_and_store_features(extractor=extractor, storage_path=storage.resolve(),
                                                 num_jobs=nj, storage_type=storage_type,
                                                 executor=executor if nj > 1 else None, progress_bar=True)
    with_feats = with_feats.to_eager()
    done = set(with_feats.ids)
    for cut in cuts:
        if cut.id not in done:  # Lhotse only warns about audio it cannot load, and drops the cut
            report.skip(cut.id, f"unreadable audio: {load_failure(cut)}")
    # Parallel jobs return their chunks interleaved: keep the manifest's order.
    return with_feats.sort_like(cuts.subset(cut_ids=[c.id for c in cuts if c.id in done]))


def load_failure(cut) -> str:
    """Why ``cut``'s audio does not load: the first backend's error in Lhotse's message."""
    try:
        cut.load_audio()
    except Exception as e:
        lines = str(e).splitlines()
        first = next((line for line in lines if line.startswith("Exception #0")), lines[0] if lines else repr(e))
        return first.rsplit("'>: ", 1)[-1].strip() or type(e).__name__
    return "it loads when tried again"


def is_digital_silence(feats: np.ndarray) -> bool:
    """All frames (nearly) identical: constant audio (dither is 0, so nothing else varies them),
    with nothing for a transcript to match. None of AN4's real utterances is flagged."""
    return len(feats) > 0 and float(np.ptp(feats, axis=0).max()) < SILENCE_PTP


def drop_digital_silence(cuts: CutSet, report: SkipReport) -> CutSet:
    """``cuts`` without those whose features are :func:`is_digital_silence` (each skipped, named).
    Reading the MFCCs back costs little (0.2 s for AN4's 845 train cuts)."""
    silent = set()
    for cut in tqdm(cuts, desc="digital silence", leave=False):
        feats = cut.load_features()
        if is_digital_silence(feats):
            silent.add(cut.id)
            report.skip(cut.id, f"digital silence: all {len(feats)} frames are identical (constant audio)")
    return cuts.filter(lambda c: c.id not in silent).to_eager() if silent else cuts


@contextlib.contextmanager
def _feature_jobs(ws: Workspace, nj: int, cluster: str | None):
    """The executor Lhotse's ``compute_and_store_features`` submits its ``nj`` chunks to: the Dask
    client of the execution layer (:class:`~weakalign.kaldi_steps.execution.Executor`: a local
    cluster of ``nj`` processes, or ``cluster``), None for ``nj=1`` in this process. Lhotse
    documents a ``dask.distributed.Client`` as its executor; the chunks and their archive names
    (``feats-<chunk>``) are the same whatever runs them."""
    from ..kaldi_steps.execution import Executor

    with Executor(nj, cluster, shared=(ws.data,)) as executor:
        yield executor.client


def _write_cuts(cuts: CutSet, path: Path) -> None:
    with atomic_path(path) as tmp:
        cuts.to_file(tmp)


def compute_features(ws: Workspace, *, nj: int = 2, splits: list[str] | None = None,
                     cluster: str | None = None, mfcc_storage: str = "kaldi-compressed") -> dict:
    """Stage ``features``: MFCC + per-speaker CMVN and fbank + global stats for every prepared split,
    in ``nj`` chunks on ``cluster`` (see :func:`_feature_jobs`); the MFCCs stored as ``mfcc_storage``
    says (:data:`MFCC_STORAGE`; the module's docstring)."""
    import torch

    if mfcc_storage not in MFCC_STORAGE:
        raise ValueError(f"mfcc_storage must be one of {', '.join(MFCC_STORAGE)}, got {mfcc_storage!r}")
    torch.set_num_threads(1)
    splits = splits or ws.available_splits()
    if not splits:
        raise missing_output(ws, "features", ws.data / "manifests")
    report = SkipReport("features")
    mfcc, fbank = KnfMfcc(), KnfFbank()
    outputs, counts = [], {}
    cut_sets = {split: supervision_cuts(ws, split) for split in splits}
    # One cluster for every split and feature type: its start-up is paid once. Started inside
    # sphere_readable, so that forked local workers read SPHERE as this process does.
    with sphere_readable(cut_sets.values()), _feature_jobs(ws, nj, cluster) as executor:
        for split, cuts in cut_sets.items():
            log.info("features %s/%s: %d cuts, %.2f h", ws.corpus, split, len(cuts),
                     sum(c.duration for c in cuts) / 3600)
            mfcc_cuts = _extract(cuts, mfcc, ws.data / "mfcc" / f"{ws.corpus}_feats_{split}", nj, report, executor,
                                 MFCC_STORAGE[mfcc_storage])
            mfcc_cuts = drop_digital_silence(mfcc_cuts, report)
            write_cmvn(ws.cmvn(split), speaker_cmvn(mfcc_cuts, desc=f"CMVN {split}"))
            _write_cuts(mfcc_cuts, ws.mfcc_cuts(split))
            # Only the cuts MFCC kept: one skip per cut, and the same cuts in both sets.
            kept = cuts.subset(cut_ids=list(mfcc_cuts.ids))
            fbank_cuts = _extract(kept, fbank, ws.data / "fbank" / f"{ws.corpus}_feats_{split}", nj, report,
                                  executor)
            _write_cuts(fbank_cuts, ws.fbank_cuts(split))
            if split == "train":
                write_json(ws.fbank_stats, global_mean_std(fbank_cuts))
                outputs.append(ws.fbank_stats)
            outputs += [ws.mfcc_cuts(split), ws.cmvn(split), ws.fbank_cuts(split)]
            counts[split] = {"cuts": len(mfcc_cuts), "frames": int(sum(c.num_frames for c in mfcc_cuts)),
                             "hours": round(sum(c.duration for c in mfcc_cuts) / 3600, 4)}
    report.log_summary()
    return {"splits": counts, "feature_config": {"mfcc": mfcc.config.to_dict(), "fbank": fbank.config.to_dict(),
                                                 "samples_scaled_to_int16": True, "mfcc_storage": mfcc_storage},
            **report.summary(), "outputs": outputs}
