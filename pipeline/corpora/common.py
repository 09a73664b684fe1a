"""Corpus entries → checked Lhotse manifests, shared by every recipe.

A recipe only reads its corpus' own files into :class:`Utterance` entries;
:func:`build_manifests` does the checks every corpus needs (duplicate ids, empty
transcripts, missing or unreadable audio, segments past the end of their audio,
another sample rate) and reports each problem by utterance through a
:class:`~weakalign.pipeline.report.SkipReport`.

A problem a recipe meets while reading (a line that is not UTF-8, a malformed line, no
transcript) does not drop the utterance there: it is kept with ``problem`` set and
skipped by :func:`build_manifests` under that cause, so the dev split, carved before,
is the one the corpus would give without the fault. Text files are read with
:func:`read_text_lines`: a line that is not UTF-8 costs its utterance (skipped, counted,
the message names file, line and byte), not the run.

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
from typing import Callable, Iterable, Iterator, Sequence

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
    ``end=None`` means "to the end of the recording". ``problem``: why the recipe could not
    read it (``"<cause>: <details>"``), skipped by :func:`build_manifests`.
    ``listed_speaker=False``: the corpus names no speaker for it (no ``utt2spk`` entry), so
    ``speaker`` is its own id and it is never drawn into dev (:func:`speaker_disjoint_dev`).
    ``gender``: ``"m"``/``"f"`` when the corpus says (the supervision's ``gender``; Kaldi's ``spk2gender``).
    """

    id: str
    audio: str
    text: str
    speaker: str
    recording_id: str | None = None
    start: float = 0.0
    end: float | None = None
    problem: str | None = None
    listed_speaker: bool = True
    gender: str | None = None

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


def where(path: Path, line: int) -> str:
    """``train/text line 3``: a file by its directory and name, as a message names it."""
    path = Path(path)
    return f"{path.parent.name}/{path.name} line {line}"


def duplicate_id(key: str, first_line: int) -> str:
    """The message for a later line of a repeated id (ignored: the first one is used)."""
    return f"duplicate id: {key} is on line {first_line} too (that line is used)"


def read_text_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, text, problem)`` for each line of a text file that should be UTF-8.

    A line that is not is decoded with U+FFFD in place of the bad bytes (so the id it starts
    with can still be read) and comes with the problem ``"not UTF-8: <file> line <n>, byte
    0x.. at column <c> ..."``; the caller skips the utterance it names.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield number, raw.decode("utf-8", errors="replace"), (
                    f"not UTF-8: {where(path, number)}, byte 0x{raw[e.start]:02x} at column {e.start + 1} "
                    f"(convert the file to UTF-8, e.g. with iconv)")


#: Samples decoded at the end of every file by :func:`probe_audio` (10 ms at 16 kHz).
TAIL_SAMPLES = 160


def probe_audio(audio: str) -> AudioInfo:
    """Sample rate, length and channels from the file header (or the command's output), after
    decoding the last :data:`TAIL_SAMPLES` samples the header promises.

    Reading the tail catches a truncated file (a FLAC cut short keeps its header's length and
    only fails when decoded there) at about the cost of the header: on all of AN4 (1078 FLAC
    files, 0.9 s to decode whole) the header alone takes 0.1-0.16 s and with the tail 0.13-0.23 s.
    A file damaged in the middle is left to the features stage, which decodes everything.

    Raises ``FileNotFoundError`` for a missing file and ``RuntimeError`` for audio
    that cannot be read.
    """
    if is_command(audio):
        cmd = audio.rstrip()[:-1]
        proc = subprocess.run(cmd, shell=True, capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"command failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-200:]}")
        source, name = io.BytesIO(proc.stdout), "command output"
    else:
        path = Path(audio)
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        source, name = str(path), str(path)
    try:
        f = sf.SoundFile(source)
    except Exception as e:  # libsndfile's errors are plain RuntimeErrors/TypeErrors
        raise RuntimeError(f"{name}: {e}") from e
    with f:
        info = AudioInfo(int(f.samplerate), int(f.frames), int(f.channels))
        if info.num_samples <= 0:
            raise RuntimeError(f"audio has no samples: {audio}")
        _read_tail(f, info.num_samples, name)
    return info


def _read_tail(f: sf.SoundFile, frames: int, name: str) -> None:
    wanted = min(frames, TAIL_SAMPLES)
    try:
        f.seek(frames - wanted)
        got = len(f.read(wanted))
    except Exception as e:
        raise RuntimeError(f"{name}: truncated or damaged: its last samples cannot be decoded ({e})") from e
    if got < wanted:
        raise RuntimeError(f"{name}: truncated: the header promises {frames} samples, {wanted - got} are missing")


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
            # Recipes drop a repeated id's later lines themselves; this is the last safety net.
            report.ignore(u.id, "duplicate id: listed again (the first listing is used)")
            continue
        seen.add(u.id)
        if u.problem:
            report.skip(u.id, u.problem)
            continue
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
            channel=0, text=u.text, speaker=u.speaker, gender=u.gender, language="English"))
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
    from each group in proportion. Utterances without a listed speaker
    (``listed_speaker=False``) stay in train and take no part in the draw: dev is the
    one the corpus gives without them (their real speaker might be a dev speaker).

    >>> us = [Utterance(f"u{i}", "x.flac", "A", f"s{i % 10}") for i in range(100)]
    >>> tr, dv = speaker_disjoint_dev(us, target_utts=20)
    >>> len(dv), len({u.speaker for u in dv} & {u.speaker for u in tr})
    (20, 0)
    >>> orphan = Utterance("u100", "x.flac", "A", "u100", listed_speaker=False)
    >>> speaker_disjoint_dev(us + [orphan], target_utts=20)[1] == dv
    True
    """
    by_spk = _by_listed_speaker(utts)
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
    dev = [u for u in utts if u.listed_speaker and u.speaker in dev_speakers]
    in_dev = {u.id for u in dev}
    train = [u for u in utts if u.id not in in_dev]
    return train, dev


def _by_listed_speaker(utts: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    """Speaker -> utterances, for the utterances whose speaker the corpus lists."""
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        if u.listed_speaker:
            by_spk.setdefault(u.speaker, []).append(u)
    return by_spk


def _interleave(groups: list[list[str]]) -> list[list[str]]:
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.append([g[i] for g in groups if i < len(g)])
    return out


def subset_utterances(utts: Sequence[Utterance], max_utts: int | None, utts_per_speaker: int | None = None,
                      seed: int = 0) -> list[Utterance]:
    """A small, speaker-spread, deterministic slice: up to ``utts_per_speaker`` utterances
    of each speaker (speakers in seeded order) until ``max_utts`` are taken. Utterances
    without a listed speaker come last, so they do not change which listed ones are taken.

    >>> us = [Utterance(f"u{i}", "x.flac", "A", f"s{i % 10}") for i in range(100)]
    >>> sl = subset_utterances(us, 12, utts_per_speaker=6)
    >>> len(sl), len({u.speaker for u in sl})
    (12, 2)
    """
    if max_utts is None and utts_per_speaker is None:
        return list(utts)
    by_spk = _by_listed_speaker(utts)
    speakers = sorted(by_spk)
    random.Random(seed).shuffle(speakers)
    for u in utts:
        if not u.listed_speaker:
            speakers.append(u.speaker)
            by_spk[u.speaker] = [u]
    limit = max_utts if max_utts is not None else math.inf
    chosen: set[str] = set()
    for spk in speakers:
        for u in by_spk[spk][:utts_per_speaker]:
            if len(chosen) >= limit:
                break
            chosen.add(u.id)
    return [u for u in utts if u.id in chosen]
