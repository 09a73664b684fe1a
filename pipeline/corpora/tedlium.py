"""The TED-LIUM 2 release layout: ``<split>/sph/<talk>.sph`` + ``<split>/stm/<talk>.stm``.

STM lines are ``talk channel speaker start end <label> transcript``; segments
whose transcript is ``ignore_time_segment_in_scoring`` are dropped (counted in
the log), as Kaldi's and Lhotse's TED-LIUM recipes do. Pronunciation-variant
marks like ``word(2)`` are removed; ``<unk>`` becomes ``<UNK>``.

>>> parse_stm_line("talk1 1 talk1 1.50 3.20 <o,f0,male> hello world(2)")
('talk1', 'talk1', 1.5, 3.2, 'hello world')
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..report import SkipReport
from .common import Utterance, read_text_lines, where

log = logging.getLogger("weakalign")

IGNORE = "ignore_time_segment_in_scoring"
_VARIANT = re.compile(r"\(\d+\)$")


def is_tedlium_dir(path: Path) -> bool:
    return (Path(path) / "stm").is_dir() and (Path(path) / "sph").is_dir()


def parse_stm_line(line: str) -> tuple[str, str, float, float, str] | None:
    fields = line.split()
    if len(fields) < 5 or line.startswith(";;"):
        return None
    talk, _channel, speaker, start, end = fields[:5]
    words = fields[5:]
    if words and words[0].startswith("<") and words[0].endswith(">") and "," in words[0]:
        words = words[1:]  # the <o,f0,gender> label
    text = " ".join(_VARIANT.sub("", w) for w in words)
    return talk, speaker, float(start), float(end), text


def read_tedlium_dir(split_dir: Path, report: SkipReport) -> list[Utterance]:
    split_dir = Path(split_dir)
    utts = []
    ignored = 0
    for stm in sorted((split_dir / "stm").glob("*.stm")):
        for n, line, problem in read_text_lines(stm):
            if not line.strip() or line.startswith(";;"):
                continue
            parsed = parse_stm_line(line)
            if parsed is None:
                report.skip(where(stm, n), f"malformed STM line: {line.strip()!r}")
                continue
            talk, speaker, start, end, text = parsed
            if text.strip() == IGNORE:
                ignored += 1
                continue
            utt_id = f"{talk}-{round(start * 100):07d}-{round(end * 100):07d}"
            utts.append(Utterance(utt_id, str(split_dir / "sph" / f"{talk}.sph"), text, speaker,
                                  recording_id=talk, start=start, end=end, problem=problem))
    log.info("%s: dropped %d segment(s) marked %s", split_dir, ignored, IGNORE)
    return utts


def find_tedlium_dirs(src: Path) -> dict[str, Path]:
    src = Path(src)
    if is_tedlium_dir(src):
        return {src.name: src}
    return {p.name: p for p in sorted(src.iterdir()) if p.is_dir() and is_tedlium_dir(p)}
