"""CMU AN4: Sphinx transcriptions + ``.fileids`` + FLAC audio under ``wav/``.

``etc/an4_{train,test}.transcription`` lines are ``<s> WORDS </s> (utt-id)``
(the ``<s>``/``</s>`` may be absent); ``etc/an4_{train,test}.fileids`` list the
audio paths relative to ``wav/`` without extension. The speaker is the
directory the audio sits in. The corpus' train set becomes ``train`` and a
speaker-disjoint ``dev`` of about :data:`DEV_UTTS` utterances.

>>> parse_transcription_line("<s> GO </s> (an253-fash-b)")
('an253-fash-b', 'GO')
"""

from __future__ import annotations

import re
from pathlib import Path

from ..report import SkipReport
from .common import Utterance, duplicate_id, read_text_lines, speaker_disjoint_dev, where

DEV_UTTS = 100
AUDIO_EXTENSIONS = (".flac", ".wav", ".sph", ".raw")
_LINE = re.compile(r"^(?P<text>.*)\((?P<id>[^()\s]+)\)\s*$")


def parse_transcription_line(line: str) -> tuple[str, str] | None:
    m = _LINE.match(line.strip())
    if not m:
        return None
    words = [w for w in m.group("text").split() if w.lower() not in ("<s>", "</s>")]
    return m.group("id"), " ".join(words)


def _audio_path(wav_dir: Path, fileid: str) -> Path:
    for ext in AUDIO_EXTENSIONS:
        p = wav_dir / f"{fileid}{ext}"
        if p.exists():
            return p
    return wav_dir / f"{fileid}.flac"  # reported as missing later


def read_transcriptions(path: Path, report: SkipReport) -> tuple[dict[str, str], dict[str, str]]:
    """``(texts, problems)`` of a Sphinx transcription file: utterance id -> words, and id -> why
    its line is unusable (not UTF-8). A line without an id, or repeating one, is ignored (reported);
    the utterance it stood for is then skipped as having no transcript."""
    texts: dict[str, str] = {}
    problems: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for n, line, problem in read_text_lines(path):
        if not line.strip():
            continue
        parsed = parse_transcription_line(line)
        if parsed is None:
            report.ignore(where(path, n), f"malformed transcription line (no utterance id): {line.strip()!r}")
            continue
        utt_id, text = parsed
        if utt_id in first_line:
            report.ignore(where(path, n), duplicate_id(utt_id, first_line[utt_id]))
            continue
        first_line[utt_id] = n
        texts[utt_id] = text
        if problem:
            problems[utt_id] = problem
    return texts, problems


def read_part(src: Path, part: str, report: SkipReport) -> list[Utterance]:
    """Utterances of ``an4_<part>`` in fileids order. One without a usable transcript stays in the
    list with its ``problem`` (skipped later), so the dev split does not depend on it."""
    etc = Path(src) / "etc"
    texts, problems = read_transcriptions(etc / f"an4_{part}.transcription", report)
    utts = []
    listed: dict[str, int] = {}
    fileids = etc / f"an4_{part}.fileids"
    for n, line, problem in read_text_lines(fileids):
        fileid = line.strip()
        if not fileid:
            continue
        utt_id = Path(fileid).name
        if utt_id in listed:
            report.ignore(where(fileids, n), duplicate_id(utt_id, listed[utt_id]))
            continue
        listed[utt_id] = n
        speaker = Path(fileid).parent.name
        problem = problem or problems.get(utt_id) or (None if utt_id in texts else "no transcript")
        utts.append(Utterance(utt_id, str(_audio_path(Path(src) / "wav", fileid)), texts.get(utt_id, ""), speaker,
                              problem=problem, gender=speaker_gender(speaker)))
    for utt_id in [u for u in texts if u not in listed]:
        report.skip(utt_id, "transcript without an entry in the fileids list")
    return utts


def speaker_gender(speaker: str) -> str | None:
    """AN4 speaker ids start with their gender (``fash``, ``mblb``).

    >>> speaker_gender("fash"), speaker_gender("mdcs2"), speaker_gender("xyz")
    ('f', 'm', None)
    """
    return speaker[:1] if speaker[:1] in ("f", "m") else None


def read_an4(src: Path, report: SkipReport, *, seed: int = 0, dev_utts: int = DEV_UTTS) -> dict[str, list[Utterance]]:
    """``{"train", "dev", "test"}`` → utterances; dev balanced over the speakers' gender (the id's first letter)."""
    train, dev = speaker_disjoint_dev(read_part(src, "train", report), seed=seed, target_utts=dev_utts,
                                      stratum=speaker_gender)
    return {"train": train, "dev": dev, "test": read_part(src, "test", report)}
