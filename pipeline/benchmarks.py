"""Benchmarks of weakalign.pipeline (``weakalign bench``; see :mod:`weakalign.pipeline.bench`).

``features_throughput``: the real ``features`` stage (MFCC + CMVN stats + fbank +
global stats, lilcom storage, manifests) on a fixed set of AN4 utterances, against
a direct kaldi-native-fbank call (soundfile decode + MFCC + fbank, nothing stored)
on the same audio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf
from lhotse import CutSet

from .acoustic_features import INT16_SCALE, knf_fbank_options, knf_mfcc_options
from .corpora import default_source, prepare
from .features import compute_features
from .stage import run_stage
from .workspace import Workspace

#: The fixed set: per split, whole speakers in seeded order (see ``prepare``'s slice options).
BENCH_SLICE = {"max_utts_per_split": {"train": 300, "dev": 50, "test": 50}, "utts_per_speaker": 15}


def _direct_knf(paths: list[str]) -> tuple[float, int]:
    """Wall time and MFCC frames of decoding + MFCC + fbank with kaldi-native-fbank alone."""
    mfcc_opts, fbank_opts = knf_mfcc_options(), knf_fbank_options()
    frames = 0
    start = time.perf_counter()
    for path in paths:
        samples, sr = sf.read(path, dtype="float32")
        samples = samples * INT16_SCALE
        for computer in (knf.OnlineMfcc(mfcc_opts), knf.OnlineFbank(fbank_opts)):
            computer.accept_waveform(sr, samples)
            computer.input_finished()
            feats = np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])
        frames += len(feats)
    return time.perf_counter() - start, frames


def features_throughput(ws: Workspace, nj: int) -> dict:
    src = default_source("an4")
    with tempfile.TemporaryDirectory() as tmp:
        bws = Workspace("an4", data_root=Path(tmp) / "data", exp_root=Path(tmp) / "exp")
        run_stage("prepare", bws, prepare, src=src, **BENCH_SLICE)
        start = time.perf_counter()
        run_stage("features", bws, compute_features, nj=nj)
        stage_s = time.perf_counter() - start
        start = time.perf_counter()
        run_stage("features", bws, compute_features, nj=1, force=True)
        stage1_s = time.perf_counter() - start
        cuts = [c for split in bws.available_splits() for c in CutSet.from_file(bws.mfcc_cuts(split))]
        audio_s = sum(c.duration for c in cuts)
        frames = sum(c.num_frames for c in cuts)
        direct_s, direct_frames = _direct_knf([c.recording.sources[0].source for c in cuts])
    return {
        "what": "features stage (13-dim MFCC + 80-dim fbank, lilcom storage, CMVN/global stats) on a fixed "
                "AN4 set vs. direct kaldi-native-fbank MFCC + fbank on the same audio (decode included)",
        "utterances": len(cuts),
        "audio_seconds": round(audio_s, 2),
        "frames_per_feature_type": frames,
        "nj": nj,
        "stage_seconds": round(stage_s, 3),
        "stage_frames_per_s": round(frames / stage_s),
        "stage_real_time_factor": round(stage_s / audio_s, 5),
        "stage_nj1_seconds": round(stage1_s, 3),
        "stage_nj1_frames_per_s": round(frames / stage1_s),
        "direct_knf_seconds": round(direct_s, 3),
        "direct_knf_frames_per_s": round(direct_frames / direct_s),
        "direct_knf_real_time_factor": round(direct_s / audio_s, 5),
        "stage_over_direct_time_ratio": round(stage_s / direct_s, 2),
        "stage_nj1_over_direct_time_ratio": round(stage1_s / direct_s, 2),
    }


def recorded_stage_times(exp_root: str | Path) -> dict[str, dict[str, float]]:
    """``corpus -> {stage: seconds}`` from every alignment stage's done-marker under ``exp_root``
    (the opt-in ``tri2``/``tri3`` last, where they were run).

    The wall times ``make align`` measured when it ran each stage, gathered per corpus (stages
    not run are absent), so a bench report carries them beside the micro-benchmarks.

    >>> import json, tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "an4" / "done").mkdir(parents=True)
    >>> _ = (root / "an4" / "done" / "mono.json").write_text(json.dumps({"stage": "mono", "seconds": 34.2}))
    >>> recorded_stage_times(root)
    {'an4': {'mono': 34.2}}
    """
    import json

    from .recipe import ALIGN_STAGES, OPT_IN_STAGES

    out = {}
    for done_dir in sorted(Path(exp_root).glob("*/done")):
        times = {}
        for stage in [*ALIGN_STAGES, *OPT_IN_STAGES]:
            marker = done_dir / f"{stage}.json"
            if marker.exists():
                times[stage] = json.loads(marker.read_text())["seconds"]
        if times:
            out[done_dir.parent.name] = times
    return out


def stage_times(ws: Workspace, nj: int) -> dict:
    """The recorded wall time of each alignment stage, for every corpus aligned under ``exp/``."""
    return {"source": "exp/<corpus>/done/<stage>.json (seconds of the last run of each stage)",
            "stage_seconds": recorded_stage_times(ws.exp_root)}


BENCHMARKS = [("features_throughput", features_throughput), ("stage_times", stage_times)]
