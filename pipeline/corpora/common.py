"""Corpus entries → checked Lhotse manifests, shared by every recipe.

A recipe only reads its corpus' own files into :class:`Utterance` entries;
:func:`build_manifests` does the checks every corpus needs (duplicate ids, empty
transcripts, missing or unreadable audio, segments past the end of their audio,
another sample rate) and reports each problem by utterance through a
:class:`~weakalign.pipeline.report.SkipReport`.

>>> from weakalign.pipeline.report import SkipReport
>>> recs, sups = build_manifests([], SkipReport("prepare"))
>>> len(recs), len(sups)
(0, 0)
"""

from __future__ import annotations

import io
import logging
import math
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import soundfile as sf
from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from ..report import SkipReport

log = logging.getLogger("weakalign")

TARGET_SAMPLE_RATE = 16000
# A segment may end this much past its audio (rounding in STM/segments times).
SEGMENT_TOLERANCE_S = 0.02


@dataclass
class Utterance:
    """One transcribed utterance as a recipe reads it, before any checks.

    ``audio`` is a file path, or a Kaldi ``wav.scp`` command ending in ``|``.
    ``end=None`` means "to the end of the recording".
    """

    id: str
    audio: str
    text: str
    speaker: str
    recording_id: str | None = None
    start: float = 0.0
    end: float | None = None

    @property
    def rec_id(self) -> str:
        return self.recording_id or self.id


@dataclass
class AudioInfo:
    sampling_rate: int
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sampling_rate


def is_command(audio: str) -> bool:
    return audio.rstrip().endswith("|")


def probe_audio(audio: str) -> AudioInfo:
    """Sample rate, length and channels from the file header (or the command's output).

    Raises ``FileNotFoundError`` for a missing file and ``RuntimeError`` for audio
    that cannot be read.
    """
    if is_command(audio):
        cmd = audio.rstrip()[:-1]
        proc = subprocess.run(cmd, shell=True, capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"command failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-200:]}")
        try:
            info = sf.info(io.BytesIO(proc.stdout))
        except Exception as e:  # libsndfile's errors are plain RuntimeErrors/TypeErrors
            raise RuntimeError(f"command output is not audio: {e}") from e
    else:
        path = Path(audio)
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        try:
            info = sf.info(str(path))
        except Exception as e:
            raise RuntimeError(f"{path}: {e}") from e
    if info.frames <= 0:
        raise RuntimeError(f"audio has no samples: {audio}")
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def make_recording(rec_id: str, audio: str, info: AudioInfo) -> Recording:
    if is_command(audio):
        source = AudioSource(type="command", channels=list(range(info.channels)), source=audio.rstrip()[:-1].strip())
    else:
        source = AudioSource(type="file", channels=list(range(info.channels)), source=str(Path(audio).resolve()))
    return Recording(id=rec_id, sources=[source], sampling_rate=info.sampling_rate,
                     num_samples=info.num_samples, duration=info.duration)


def normalize_text(text: str) -> str:
    return " ".join(text.upper().split())


def build_manifests(utts: Iterable[Utterance], report: SkipReport,
                    target_sample_rate: int = TARGET_SAMPLE_RATE) -> tuple[RecordingSet, SupervisionSet]:
    """Check ``utts`` and turn the good ones into validated Lhotse manifests.

    Every dropped utterance goes into ``report`` with its reason; recordings at
    another sample rate are resampled (by Lhotse, lazily on load) and said so.
    """
    from lhotse import validate_recordings_and_supervisions

    seen: set[str] = set()
    kept: list[Utterance] = []
    for u in utts:
        if u.id in seen:
            report.skip(u.id, "duplicate utterance id (the first one is kept)")
            continue
        seen.add(u.id)
        u.text = normalize_text(u.text)
        if not u.text:
            report.skip(u.id, "empty transcript")
            continue
        kept.append(u)

    recordings: dict[str, Recording] = {}
    bad_audio: dict[str, str] = {}
    for u in kept:
        if u.rec_id in recordings or u.rec_id in bad_audio:
            continue
        try:
            info = probe_audio(u.audio)
        except FileNotFoundError as e:
            bad_audio[u.rec_id] = f"missing audio: {e}"
            continue
        except RuntimeError as e:
            bad_audio[u.rec_id] = f"unreadable audio: {e}"
            continue
        rec = make_recording(u.rec_id, u.audio, info)
        if info.channels > 1:
            report.warn(u.rec_id, f"{info.channels} channels; only channel 0 is used")
        if info.sampling_rate != target_sample_rate:
            report.warn(u.rec_id, f"sample rate {info.sampling_rate} Hz: resampled to {target_sample_rate} Hz")
            rec = rec.resample(target_sample_rate)
        recordings[u.rec_id] = rec

    supervisions = []
    used_recordings: set[str] = set()
    for u in kept:
        if u.rec_id in bad_audio:
            report.skip(u.id, bad_audio[u.rec_id])
            continue
        rec = recordings[u.rec_id]
        end = rec.duration if u.end is None else u.end
        if u.start < 0 or end <= u.start:
            report.skip(u.id, f"bad segment times: start {u.start:.3f} s, end {end:.3f} s")
            continue
        if end > rec.duration + SEGMENT_TOLERANCE_S:
            report.skip(u.id, f"audio shorter than its segment: segment ends at {end:.3f} s, "
                              f"audio {rec.duration:.3f} s")
            continue
        end = min(end, rec.duration)
        supervisions.append(SupervisionSegment(
            id=u.id, recording_id=u.rec_id, start=round(u.start, 4), duration=round(end - u.start, 4),
            channel=0, text=u.text, speaker=u.speaker, language="English"))
        used_recordings.add(u.rec_id)

    recs = RecordingSet.from_recordings(r for rid, r in recordings.items() if rid in used_recordings)
    sups = SupervisionSet.from_segments(supervisions)
    if len(sups):
        validate_recordings_and_supervisions(recs, sups)
    return recs, sups


def speaker_disjoint_dev(utts: Sequence[Utterance], *, seed: int = 0, target_utts: int | None = None,
                         speaker_fraction: float | None = None,
                         stratum: Callable[[str], str] | None = None) -> tuple[list[Utterance], list[Utterance]]:
    """Split ``utts`` into ``(train, dev)`` by whole speakers, seeded.

    Either ``target_utts`` (add speakers until dev holds about that many
    utterances) or ``speaker_fraction`` (that share of each stratum's speakers).
    ``stratum(speaker)`` groups speakers (e.g. gender, child/adult) so dev draws
    from each group in proportion.

    >>> us = [Utterance(f"u{i}", "x.flac", "A", f"s{i % 10}") for i in range(100)]
    >>> tr, dv = speaker_disjoint_dev(us, target_utts=20)
    >>> len(dv), len({u.speaker for u in dv} & {u.speaker for u in tr})
    (20, 0)
    """
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    groups: dict[str, list[str]] = {}
    for spk in sorted(by_spk):
        groups.setdefault(stratum(spk) if stratum else "", []).append(spk)
    rng = random.Random(seed)
    for g in groups.values():
        rng.shuffle(g)
    dev_speakers: set[str] = set()
    if speaker_fraction is not None:
        for g in groups.values():
            dev_speakers.update(g[:max(1, round(speaker_fraction * len(g)))])
    elif target_utts is not None:
        # Round-robin over strata so each contributes in turn.
        order = [spk for tier in _interleave(list(groups.values())) for spk in tier]
        count = 0
        for spk in order:
            if count >= target_utts:
                break
            # Take the speaker if that brings dev closer to the target.
            if abs(count + len(by_spk[spk]) - target_utts) <= abs(count - target_utts) or count == 0:
                dev_speakers.add(spk)
                count += len(by_spk[spk])
    else:
        raise ValueError("give target_utts or speaker_fraction")
    train = [u for u in utts if u.speaker not in dev_speakers]
    dev = [u for u in utts if u.speaker in dev_speakers]
    return train, dev


def _interleave(groups: list[list[str]]) -> list[list[str]]:
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.append([g[i] for g in groups if i < len(g)])
    return out


def subset_utterances(utts: Sequence[Utterance], max_utts: int | None, utts_per_speaker: int | None = None,
                      seed: int = 0) -> list[Utterance]:
    """A small, speaker-spread, deterministic slice: up to ``utts_per_speaker`` utterances
    of each speaker (speakers in seeded order) until ``max_utts`` are taken.

    >>> us = [Utterance(f"u{i}", "x.flac", "A", f"s{i % 10}") for i in range(100)]
    >>> sl = subset_utterances(us, 12, utts_per_speaker=6)
    >>> len(sl), len({u.speaker for u in sl})
    (12, 2)
    """
    if max_utts is None and utts_per_speaker is None:
        return list(utts)
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_spk)
    random.Random(seed).shuffle(speakers)
    limit = max_utts if max_utts is not None else math.inf
    chosen: set[str] = set()
    for spk in speakers:
        for u in by_spk[spk][:utts_per_speaker]:
            if len(chosen) >= limit:
                break
            chosen.add(u.id)
    return [u for u in utts if u.id in chosen]
