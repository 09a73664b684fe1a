"""Alignments as text for people who check them by eye: Kaldi CTM and Praat TextGrid.

Both take Lhotse :class:`~lhotse.supervision.AlignmentItem` lists (``symbol``, ``start``,
``duration`` in seconds, relative to the utterance start) and are written atomically.

CTM (as Kaldi's ``lattice-align-words | nbest-to-ctm``), one line per segment, sorted by
utterance id and start time as sclite and ``sort -k1,1 -k3,3n`` expect::

    <utterance-id> 1 <start> <duration> <symbol>

TextGrid: one ``IntervalTier`` per alignment kind (MFA names them ``words`` and ``phones``),
in Praat's long (``format="long"``, the default, as MFA's ``long_textgrid``) or short text
format (``"short"``). Praat wants every tier to cover ``[xmin, xmax]`` without gaps, so gaps
between segments become intervals with empty text. :func:`read_textgrid` reads both formats.
The same tiers in MFA's other output formats (``mfa align --output_format json|csv``):
``"json"``, ``{"start", "end", "tiers": {name: {"type": "interval", "entries": [[begin, end,
label], ...]}}}``, and ``"csv"``, rows ``Begin,End,Label,Type,Speaker`` -- labelled segments only.

>>> from pathlib import Path; import tempfile
>>> from lhotse.supervision import AlignmentItem
>>> d = Path(tempfile.mkdtemp())
>>> words = [AlignmentItem("YES", 0.3, 0.4)]
>>> write_ctm(d / "w.ctm", [("utt2", words), ("utt1", words)])
>>> (d / "w.ctm").read_text()
'utt1 1 0.30 0.40 YES\\nutt2 1 0.30 0.40 YES\\n'
>>> write_textgrid(d / "utt1.TextGrid", {"words": words}, xmax=1.0, format="short")
>>> [(round(a, 2), round(b, 2), t) for a, b, t in read_textgrid(d / "utt1.TextGrid")["words"]]
[(0.0, 0.3, ''), (0.3, 0.7, 'YES'), (0.7, 1.0, '')]
"""

from __future__ import annotations

import csv
import io
import json
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
    """Write ``(utt_id, items)`` pairs as one CTM file, sorted by utterance id, then start time."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for utt_id, items in sorted(utterances, key=lambda pair: pair[0]):
            for line in format_ctm_lines(utt_id, sorted(items, key=lambda it: it.start), decimals):
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


TEXTGRID_FORMATS = ("long", "short")
#: Every format the alignment files are written in: Praat's two, MFA's JSON and CSV.
ALIGNMENT_FILE_FORMATS = TEXTGRID_FORMATS + ("json", "csv")
#: Their file name endings, as MFA names them.
ALIGNMENT_FILE_SUFFIX = {"long": ".TextGrid", "short": ".TextGrid", "json": ".json", "csv": ".csv"}


def _textgrid_lines(tiers: dict[str, Sequence[AlignmentItem]], xmin: float, xmax: float):
    """``(long-format line, short-format line or None)`` pairs after the two header lines: the short
    format keeps only the values, without the long format's labels and item headings."""
    yield f"xmin = {_num(xmin)}", _num(xmin)
    yield f"xmax = {_num(xmax)}", _num(xmax)
    yield "tiers? <exists>", "<exists>"
    yield f"size = {len(tiers)}", str(len(tiers))
    yield "item []:", None
    for k, (name, items) in enumerate(tiers.items(), 1):
        intervals = _fill_gaps(items, xmin, xmax)
        yield f"    item [{k}]:", None
        yield '        class = "IntervalTier"', '"IntervalTier"'
        yield f"        name = {_quote(name)}", _quote(name)
        yield f"        xmin = {_num(xmin)}", _num(xmin)
        yield f"        xmax = {_num(xmax)}", _num(xmax)
        yield f"        intervals: size = {len(intervals)}", str(len(intervals))
        for j, (a, b, text) in enumerate(intervals, 1):
            yield f"        intervals [{j}]:", None
            yield f"            xmin = {_num(a)}", _num(a)
            yield f"            xmax = {_num(b)}", _num(b)
            yield f"            text = {_quote(text)}", _quote(text)


def format_textgrid(tiers: dict[str, Sequence[AlignmentItem]], xmax: float, xmin: float = 0.0,
                    format: str = "long") -> str:
    """Praat TextGrid text (``format`` long or short) with one interval tier per entry of ``tiers``, in order."""
    if format not in TEXTGRID_FORMATS:
        raise ValueError(f"TextGrid format must be one of {TEXTGRID_FORMATS}, got {format!r}")
    body = [long if format == "long" else short for long, short in _textgrid_lines(tiers, xmin, xmax)
            if format == "long" or short is not None]
    return "\n".join(['File type = "ooTextFile"', 'Object class = "TextGrid"', "", *body]) + "\n"


def write_textgrid(path: str | os.PathLike, tiers: dict[str, Sequence[AlignmentItem]], xmax: float,
                   xmin: float = 0.0, format: str = "long") -> None:
    """Write a TextGrid file (UTF-8) with one interval tier per alignment kind."""
    text = format_textgrid(tiers, xmax=xmax, xmin=xmin, format=format)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _segments(items: Sequence[AlignmentItem]) -> list[tuple[float, float, str]]:
    ordered = sorted(items, key=lambda x: x.start)
    return [(round(it.start, 6), round(it.start + it.duration, 6), it.symbol) for it in ordered]


def format_mfa_json(tiers: dict[str, Sequence[AlignmentItem]], xmax: float) -> str:
    """MFA's JSON output of one file: its tiers' labelled segments, ``[begin, end, label]`` each.

    >>> print(format_mfa_json({"words": [AlignmentItem("YES", 0.3, 0.4)]}, xmax=1.0))
    {"start": 0, "end": 1.0, "tiers": {"words": {"type": "interval", "entries": [[0.3, 0.7, "YES"]]}}}
    """
    return json.dumps({"start": 0, "end": round(xmax, 6), "tiers": {
        name: {"type": "interval", "entries": [list(s) for s in _segments(items)]} for name, items in tiers.items()}},
        ensure_ascii=False)


def format_mfa_csv(tiers: dict[str, Sequence[AlignmentItem]], speaker: str = "") -> str:
    """MFA's CSV output of one file: ``Begin,End,Label,Type,Speaker`` rows, ``Type`` the tier
    (``words``/``phones``) and ``Speaker`` from a ``<speaker> - <type>`` tier name, else ``speaker``.

    >>> format_mfa_csv({"s1 - words": [AlignmentItem("YES", 0.3, 0.4)]}).splitlines()
    ['Begin,End,Label,Type,Speaker', '0.3,0.7,YES,words,s1']
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Begin", "End", "Label", "Type", "Speaker"])
    for name, items in tiers.items():
        who, _, kind = name.rpartition(" - ")
        writer.writerows([begin, end, label, kind, who or speaker] for begin, end, label in _segments(items))
    return out.getvalue()


def write_alignment_file(path: str | os.PathLike, tiers: dict[str, Sequence[AlignmentItem]], xmax: float,
                         format: str = "long", speaker: str = "") -> None:
    """One file's tiers in ``format`` (:data:`ALIGNMENT_FILE_FORMATS`); ``speaker``: the CSV's speaker
    column where the tier names do not say it."""
    if format == "json":
        text = format_mfa_json(tiers, xmax) + "\n"
    elif format == "csv":
        text = format_mfa_csv(tiers, speaker)
    else:
        text = format_textgrid(tiers, xmax=xmax, format=format)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _textgrid_values(text: str) -> list[str]:
    """The values of a long- or short-format TextGrid in file order: the part after ``=`` of a
    long-format ``key = value`` line, a short-format line as it is, ``<exists>``; headings such as
    ``item [1]:`` carry no value. Both formats give the same list."""
    values = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line[0] in '"<-.0123456789':
            values.append(line)
        elif "=" in line:
            values.append(line.partition("=")[2].strip())
        elif line.endswith("<exists>"):
            values.append("<exists>")
    return values


def read_textgrid(path: str | os.PathLike) -> dict[str, list[tuple[float, float, str]]]:
    """Parse a long- or short-format TextGrid into ``tier name -> [(xmin, xmax, text)]`` (interval tiers).

    A small reader for checking files this module writes (and Praat's own text formats);
    it raises ``ValueError`` on anything it does not understand.
    """
    with open(path, encoding="utf-8") as f:
        values = iter(_textgrid_values(f.read()))

    def take(kind, what):
        value = next(values, None)
        if value is None:
            raise ValueError(f"{path}: ended before {what}")
        try:
            return _parse_string(value, path, what) if kind is str else kind(value)
        except ValueError as e:
            raise ValueError(f"{path}: {what}: expected {kind.__name__}, got {value!r}") from e

    if (take(str, "the file type"), take(str, "the object class")) != ("ooTextFile", "TextGrid"):
        raise ValueError(f"{path}: not a TextGrid")
    take(float, "xmin"), take(float, "xmax")
    if next(values, None) != "<exists>":
        return {}
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    for k in range(take(int, "the tier count")):
        if take(str, f"tier {k + 1}'s class") != "IntervalTier":
            raise ValueError(f"{path}: tier {k + 1} is not an IntervalTier")
        name = take(str, f"tier {k + 1}'s name")
        take(float, f"tier {name!r} xmin"), take(float, f"tier {name!r} xmax")
        n = take(int, f"tier {name!r} interval count")
        tiers[name] = []
        try:
            for j in range(n):
                tiers[name].append((take(float, "xmin"), take(float, "xmax"), take(str, "text")))
        except ValueError as e:
            raise ValueError(f"{path}: tier {name!r} declares {n} intervals but has {len(tiers[name])}") from e
    return tiers


def _parse_string(value: str, path, what) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError(f"{path}: {what}: expected a quoted string, got {value!r}")
    return value[1:-1].replace('""', '"')
