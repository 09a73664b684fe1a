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
from .common import Utterance, speaker_disjoint_dev

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


def read_part(src: Path, part: str, report: SkipReport) -> list[Utterance]:
    """Utterances of ``an4_<part>`` in fileids order."""
    etc = Path(src) / "etc"
    texts: dict[str, str] = {}
    with open(etc / f"an4_{part}.transcription") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parsed = parse_transcription_line(line)
            if parsed is None:
                report.skip(f"an4_{part}.transcription:{n}", f"malformed transcription line: {line.strip()!r}")
                continue
            utt_id, text = parsed
            if utt_id in texts:
                report.skip(utt_id, "duplicate utterance id (the first one is kept)")
                continue
            texts[utt_id] = text
    utts = []
    listed = set()
    with open(etc / f"an4_{part}.fileids") as f:
        for line in f:
            fileid = line.strip()
            if not fileid:
                continue
            utt_id = Path(fileid).name
            listed.add(utt_id)
            if utt_id not in texts:
                report.skip(utt_id, "no transcript")
                continue
            speaker = Path(fileid).parent.name
            utts.append(Utterance(utt_id, str(_audio_path(Path(src) / "wav", fileid)), texts[utt_id], speaker))
    for utt_id in texts.keys() - listed:
        report.skip(utt_id, "transcript without an entry in the fileids list")
    return utts


def read_an4(src: Path, report: SkipReport, *, seed: int = 0, dev_utts: int = DEV_UTTS) -> dict[str, list[Utterance]]:
    """``{"train", "dev", "test"}`` → utterances; dev balanced over the speakers' gender (the id's first letter)."""
    train, dev = speaker_disjoint_dev(read_part(src, "train", report), seed=seed, target_utts=dev_utts,
                                      stratum=lambda spk: spk[:1])
    return {"train": train, "dev": dev, "test": read_part(src, "test", report)}
