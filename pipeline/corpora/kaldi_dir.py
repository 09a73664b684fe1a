"""Kaldi data directories: ``wav.scp`` (+ optional ``segments``, ``text``, ``utt2spk``).

``wav.scp`` entries are file paths (relative ones are resolved against the
corpus directory ``base``) or piped commands ending in ``|`` (stored as Lhotse
``AudioSource(type="command")`` and run when the audio is loaded). Without
``segments`` each recording is one utterance; without ``text`` the utterances
have no transcript and are skipped (reported).

Speakers: without ``utt2spk`` each utterance is its own speaker (Kaldi's convention).
With ``utt2spk``, an utterance it does not list is kept as its own speaker too (its id),
but it is reported (one warning per data dir: count and ids; ``speaker_not_in_utt2spk``
in the stage summary) and never drawn into dev, so the dev split is the one the corpus
gives without it.

Bad lines: a repeated id's later lines are ignored (the first is used; reported, not a
skipped utterance); a line that is not UTF-8 or a malformed ``segments`` line costs the
utterance(s) it names, skipped with that cause (file and line in the message).

>>> is_kaldi_data_dir(Path("/nonexistent"))
False
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..report import SkipReport
from .common import Utterance, duplicate_id, is_command, read_text_lines, where

log = logging.getLogger("weakalign")

#: At most this many ids in the one-line report of utterances missing from utt2spk.
MAX_IDS_LISTED = 20


def is_kaldi_data_dir(path: Path) -> bool:
    return (Path(path) / "wav.scp").is_file() and (Path(path) / "text").is_file()


@dataclass
class Table:
    """A Kaldi table file (``key rest-of-line``): the first value of each key in file order, and the
    problem of each key whose line could not be read (not UTF-8; its value is then unreliable)."""

    values: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def read_table(path: Path, report: SkipReport) -> Table:
    """Read ``path`` (empty lines ignored); a repeated key's later lines go to ``report`` as ignored."""
    table, first_line = Table(), {}
    for number, line, problem in read_text_lines(path):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        key = parts[0]
        if key in first_line:
            report.ignore(where(path, number), duplicate_id(key, first_line[key]))
            continue
        first_line[key] = number
        table.values[key] = parts[1] if len(parts) > 1 else ""
        if problem:
            table.problems[key] = problem
    return table


def _resolve_audio(entry: str, base: Path) -> str:
    if is_command(entry):
        return entry
    p = Path(entry)
    return str(p if p.is_absolute() else base / p)


def _read_genders(path: Path, report: SkipReport) -> dict[str, str]:
    """``spk2gender`` as ``{speaker: "m"|"f"}``; other values are left out with a warning."""
    if not path.exists():
        return {}
    table = read_table(path, report)
    genders = {spk: value.strip().lower() for spk, value in table.values.items()}
    odd = sorted(spk for spk, g in genders.items() if g not in ("m", "f"))
    if odd:
        log.warning("prepare: %s: %d speaker(s) with a gender other than m/f, left without one: %s",
                    path, len(odd), " ".join(odd[:MAX_IDS_LISTED]))
    return {spk: g for spk, g in genders.items() if g in ("m", "f")}


class _Speakers:
    """The speaker rule of one data dir (see the module docstring)."""

    def __init__(self, data_dir: Path, report: SkipReport):
        path = data_dir / "utt2spk"
        self.table = read_table(path, report) if path.exists() else None
        self.genders = _read_genders(data_dir / "spk2gender", report)
        self.unlisted: list[str] = []

    def assign(self, u: Utterance) -> Utterance:
        if self.table is None:
            return u
        if u.id in self.table.problems:
            u.problem = u.problem or self.table.problems[u.id]
        elif u.id in self.table.values:
            u.speaker = self.table.values[u.id]
            u.gender = self.genders.get(u.speaker)
        else:
            u.listed_speaker = False
            if not u.problem:
                self.unlisted.append(u.id)
        return u

    def log_unlisted(self, data_dir: Path) -> None:
        if not self.unlisted:
            return
        shown = " ".join(self.unlisted[:MAX_IDS_LISTED]) + (" ..." if len(self.unlisted) > MAX_IDS_LISTED else "")
        log.warning("prepare: %d utterance(s) not in %s: each is its own speaker (its id) and stays out "
                    "of dev: %s", len(self.unlisted), data_dir / "utt2spk", shown)


def _segment_problem(utt_id: str, segments: Table, wavs: Table) -> str | None:
    """Why the ``segments`` line of ``utt_id`` gives no usable audio span, or None."""
    if utt_id in segments.problems:
        return segments.problems[utt_id]
    fields = segments.values[utt_id].split()
    try:
        rec_id, _, _ = fields[0], float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        return f"malformed segments line: {utt_id} {segments.values[utt_id]!r}"
    if rec_id not in wavs.values:
        return f"missing audio: recording {rec_id} not in wav.scp"
    return wavs.problems.get(rec_id)


def _segment_utterances(data_dir: Path, wavs: Table, texts: Table, base: Path,
                        report: SkipReport) -> list[Utterance]:
    utts = []
    segments = read_table(data_dir / "segments", report)
    for utt_id, line in segments.values.items():
        u = Utterance(utt_id, "", texts.values.get(utt_id, ""), utt_id,
                      problem=_segment_problem(utt_id, segments, wavs) or texts.problems.get(utt_id))
        if u.problem is None:
            rec_id, start, end = line.split()[:3]
            end = float(end)
            u.audio, u.recording_id = _resolve_audio(wavs.values[rec_id], base), rec_id
            u.start, u.end = float(start), None if end < 0 else end  # Kaldi: -1 means "to the end"
        utts.append(u)
    return utts


def _recording_utterances(wavs: Table, texts: Table, base: Path) -> list[Utterance]:
    utts = []
    for utt_id, entry in wavs.values.items():
        utts.append(Utterance(utt_id, _resolve_audio(entry, base), texts.values.get(utt_id, ""), utt_id,
                              problem=wavs.problems.get(utt_id) or texts.problems.get(utt_id)))
    return utts


def read_kaldi_data_dir(data_dir: Path, base: Path | None = None,
                        report: SkipReport | None = None) -> list[Utterance]:
    """Utterances of one Kaldi data dir; relative audio paths are taken from ``base``
    (default: the data dir's parent, as a corpus' own ``wav.scp`` usually means)."""
    data_dir = Path(data_dir)
    base = Path(base) if base is not None else data_dir.parent
    report = report or SkipReport("prepare")
    wavs = read_table(data_dir / "wav.scp", report)
    texts = read_table(data_dir / "text", report) if (data_dir / "text").exists() else Table()
    if (data_dir / "segments").exists():
        utts = _segment_utterances(data_dir, wavs, texts, base, report)
    else:
        utts = _recording_utterances(wavs, texts, base)
    speakers = _Speakers(data_dir, report)
    utts = [speakers.assign(u) for u in utts]
    speakers.log_unlisted(data_dir)
    listed = {u.id for u in utts}
    for utt_id in [k for k in texts.values if k not in listed]:
        report.skip(utt_id, "missing audio: transcript without a wav.scp/segments entry")
    return utts


def find_data_dirs(src: Path) -> dict[str, Path]:
    """Split name → data dir: ``src`` itself if it is one (named by its directory),
    else every immediate subdirectory that is one."""
    src = Path(src)
    if is_kaldi_data_dir(src):
        return {src.name: src}
    return {p.name: p for p in sorted(src.iterdir()) if p.is_dir() and is_kaldi_data_dir(p)}
