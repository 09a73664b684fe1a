"""Alignments as text for people who check them by eye: Kaldi CTM and Praat TextGrid.

Both take Lhotse :class:`~lhotse.supervision.AlignmentItem` lists (``symbol``, ``start``,
``duration`` in seconds, relative to the utterance start) and are written atomically.

CTM (as Kaldi's ``lattice-align-words | nbest-to-ctm``), one line per segment::

    <utterance-id> 1 <start> <duration> <symbol>

TextGrid: Praat's long text format with one ``IntervalTier`` per alignment kind (e.g.
``words`` and ``phones``). Praat wants every tier to cover ``[xmin, xmax]`` without gaps,
so gaps between segments become intervals with empty text.

>>> from pathlib import Path; import tempfile
>>> from lhotse.supervision import AlignmentItem
>>> d = Path(tempfile.mkdtemp())
>>> words = [AlignmentItem("YES", 0.3, 0.4)]
>>> write_ctm(d / "w.ctm", [("utt1", words)])
>>> (d / "w.ctm").read_text()
'utt1 1 0.30 0.40 YES\\n'
>>> write_textgrid(d / "utt1.TextGrid", {"words": words}, xmax=1.0)
>>> [(round(a, 2), round(b, 2), t) for a, b, t in read_textgrid(d / "utt1.TextGrid")["words"]]
[(0.0, 0.3, ''), (0.3, 0.7, 'YES'), (0.7, 1.0, '')]
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from lhotse.supervision import AlignmentItem

from ..pipeline.io import atomic_open

# Times are written with this many decimals; 10 ms frames need 2, keep 3 for odd frame shifts.
_CTM_DECIMALS = 2
_EPS = 1e-6


def format_ctm_lines(utt_id: str, items: Sequence[AlignmentItem], decimals: int = _CTM_DECIMALS) -> list[str]:
    """CTM lines (channel 1) of one utterance's segments."""
    return [f"{utt_id} 1 {it.start:.{decimals}f} {it.duration:.{decimals}f} {it.symbol}" for it in items]


def write_ctm(path: str | os.PathLike, utterances: Iterable[tuple[str, Sequence[AlignmentItem]]],
              decimals: int = _CTM_DECIMALS) -> None:
    """Write ``(utt_id, items)`` pairs as one CTM file."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for utt_id, items in utterances:
            for line in format_ctm_lines(utt_id, items, decimals):
                f.write(line + "\n")


def read_ctm(path: str | os.PathLike) -> dict[str, list[AlignmentItem]]:
    """Read a CTM file into ``utt_id -> [AlignmentItem]`` (a 6th confidence column is kept as score)."""
    out: dict[str, list[AlignmentItem]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (5, 6):
                raise ValueError(f"{path}:{lineno}: a CTM line has 5 or 6 fields, got {len(fields)}: {line!r}")
            score = float(fields[5]) if len(fields) == 6 else None
            out.setdefault(fields[0], []).append(
                AlignmentItem(symbol=fields[4], start=float(fields[2]), duration=float(fields[3]), score=score))
    return out


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _fill_gaps(items: Sequence[AlignmentItem], xmin: float, xmax: float) -> list[tuple[float, float, str]]:
    """Intervals covering ``[xmin, xmax]``: the segments (clipped) plus empty ones in the gaps."""
    intervals: list[tuple[float, float, str]] = []
    t = xmin
    for it in sorted(items, key=lambda x: x.start):
        start, end = max(it.start, t), min(it.start + it.duration, xmax)
        if end - start <= _EPS:
            continue
        if start - t > _EPS:
            intervals.append((t, start, ""))
        intervals.append((start, end, it.symbol))
        t = end
    if xmax - t > _EPS or not intervals:
        intervals.append((t, xmax, ""))
    return intervals


def _num(x: float) -> str:
    """A time in plain decimal notation, to the microsecond (``%g`` would round long times)."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_textgrid(tiers: dict[str, Sequence[AlignmentItem]], xmax: float, xmin: float = 0.0) -> str:
    """Praat long-format TextGrid text with one interval tier per entry of ``tiers`` (in order)."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
             f"xmin = {_num(xmin)}", f"xmax = {_num(xmax)}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for k, (name, items) in enumerate(tiers.items(), 1):
        intervals = _fill_gaps(items, xmin, xmax)
        lines += [f"    item [{k}]:", '        class = "IntervalTier"', f"        name = {_quote(name)}",
                  f"        xmin = {_num(xmin)}", f"        xmax = {_num(xmax)}",
                  f"        intervals: size = {len(intervals)}"]
        for j, (a, b, text) in enumerate(intervals, 1):
            lines += [f"        intervals [{j}]:", f"            xmin = {_num(a)}", f"            xmax = {_num(b)}",
                      f"            text = {_quote(text)}"]
    return "\n".join(lines) + "\n"


def write_textgrid(path: str | os.PathLike, tiers: dict[str, Sequence[AlignmentItem]], xmax: float,
                   xmin: float = 0.0) -> None:
    """Write a TextGrid file (UTF-8) with one interval tier per alignment kind."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(format_textgrid(tiers, xmax=xmax, xmin=xmin))


def read_textgrid(path: str | os.PathLike) -> dict[str, list[tuple[float, float, str]]]:
    """Parse a long-format TextGrid into ``tier name -> [(xmin, xmax, text)]`` (interval tiers).

    A small reader for checking files this module writes (and Praat's own long format);
    it raises ``ValueError`` on anything it does not understand.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if 'Object class = "TextGrid"' not in text:
        raise ValueError(f"{path}: not a long-format TextGrid")
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    declared: dict[str, int] = {}
    name: str | None = None
    in_intervals = False  # the tier's own xmin/xmax come before its "intervals: size" line
    interval: dict[str, float] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        key, _, value = line.partition("=")
        key = key.strip()
        if key == "name":
            name = _parse_string(value, path, lineno)
            tiers[name] = []
            in_intervals = False
        elif key == "intervals: size" and name is not None:
            declared[name] = int(value)
            in_intervals = True
        elif in_intervals and key in ("xmin", "xmax"):
            interval[key] = float(value)
        elif in_intervals and key == "text":
            if set(interval) != {"xmin", "xmax"}:
                raise ValueError(f"{path}:{lineno}: interval text without xmin/xmax")
            tiers[name].append((interval["xmin"], interval["xmax"], _parse_string(value, path, lineno)))
            interval = {}
    for tier, n in declared.items():
        if len(tiers[tier]) != n:
            raise ValueError(f"{path}: tier {tier!r} declares {n} intervals but has {len(tiers[tier])}")
    return tiers


def _parse_string(value: str, path, lineno: int) -> str:
    value = value.strip()
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError(f"{path}:{lineno}: expected a quoted string, got {value!r}")
    return value[1:-1].replace('""', '"')
