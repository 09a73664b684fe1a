"""The ``features`` stage: Kaldi-compatible MFCC (+ per-speaker CMVN) and log-mel fbank.

Both are computed by `kaldi-native-fbank` inside Lhotse's ``compute_and_store_features``, through
the extractors of :mod:`weakalign.pipeline.acoustic_features` (whose docstring gives the
feature choices), on the execution layer's Dask client (``nj`` chunks).

- NIST SPHERE (``.sph``, TED-LIUM) audio: Lhotse reads it with the external ``sph2pipe``;
  when that is not on ``PATH`` the stage has Lhotse read through libsndfile instead
  (which reads uncompressed SPHERE; shorten-compressed SPHERE needs ``sph2pipe``).
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
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import numpy as np
from lhotse import CutSet, LilcomChunkyWriter, RecordingSet, SupervisionSet
from lhotse.features.io import KaldiWriter, close_cached_file_handles
from tqdm import tqdm

from .acoustic_features import KnfFbank, KnfMfcc, global_mean_std, speaker_cmvn, sphere_readable, write_cmvn
from .io import atomic_path, write_json
from .prerequisites import missing_output
from .report import SkipReport
from .workspace import Workspace

log = logging.getLogger("weakalign")

#: Below this range (max over coefficients of max - min over frames) a cut's MFCCs are constant.
SILENCE_PTP = 1e-3


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
