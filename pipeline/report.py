"""Collects the items a stage had to skip, so none is dropped silently.

One item is one skip, keyed by its *cause*: a reason reads ``"<cause>: <details>"`` and the
part before the first colon is what :meth:`SkipReport.reasons` counts. An item skipped again
later in the same stage (a file that neither the MFCC nor the fbank extractor can read, an
utterance without a monophone alignment that then fails to align) keeps its first cause,
which is the root one, and is counted once. An input line that is not used although its
utterance is kept (the second line of a duplicate id) is no skip: it goes into
``ignored_lines``.

>>> r = SkipReport("prepare")
>>> r.skip("utt1", "empty transcript")
>>> r.skip("utt1", "missing audio: no file x.wav")
>>> r.count, r.reasons()
(1, {'empty transcript': 1})

At the end of ``weakalign align``, :func:`log_skip_table` gathers every stage's skips from
its done-marker into one table.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .io import atomic_open, read_json

log = logging.getLogger("weakalign")


def cause_of(reason: str) -> str:
    """The key a reason is counted under: the text before its first colon."""
    return reason.split(":")[0].strip()


@dataclass
class SkipReport:
    """Skipped items with their reasons; ``summary()`` goes into the stage log and marker."""

    stage: str
    items: list[tuple[str, str]] = field(default_factory=list)
    ignored_lines: list[tuple[str, str]] = field(default_factory=list)
    _skipped: set[str] = field(default_factory=set, repr=False)

    def skip(self, item_id: str, reason: str) -> None:
        if item_id in self._skipped:
            log.info("%s: %s (already skipped) also has: %s", self.stage, item_id, reason)
            return
        self._skipped.add(item_id)
        self.items.append((item_id, reason))
        log.warning("%s: skipping %s: %s", self.stage, item_id, reason)

    def is_skipped(self, item_id: str) -> bool:
        return item_id in self._skipped

    def warn(self, item_id: str, message: str) -> None:
        """An item kept but changed (e.g. resampled): said, not counted as skipped."""
        log.warning("%s: %s: %s", self.stage, item_id, message)

    def ignore(self, where: str, message: str) -> None:
        """An input entry left unused (``where``: file and line) while its item is kept: said and
        listed, not counted as a skipped item."""
        self.ignored_lines.append((where, message))
        log.warning("%s: ignoring %s: %s", self.stage, where, message)

    @property
    def count(self) -> int:
        return len(self.items)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(cause_of(reason) for _, reason in self.items))

    def summary(self) -> dict:
        return {"skipped": self.count, "reasons": self.reasons(), "items": [list(x) for x in self.items],
                "ignored_lines": [list(x) for x in self.ignored_lines]}

    def log_summary(self) -> None:
        ignored = f"; {len(self.ignored_lines)} input line(s) ignored" if self.ignored_lines else ""
        if self.count:
            log.warning("%s: skipped %d item(s): %s%s", self.stage, self.count, self.reasons(), ignored)
        else:
            log.info("%s: skipped 0 items%s", self.stage, ignored)


# ---------------------------------------------------------------- the end-of-align table

def skip_rows(done_dir: Path, stages: list[str]) -> list[tuple[str, str, list[str]]]:
    """``(stage, cause, ids)`` for every cause of skipped items (and of ignored input lines) in the
    done-markers of ``stages`` under ``done_dir``, in stage order; stages not done are left out."""
    rows = []
    for stage in stages:
        marker = Path(done_dir) / f"{stage}.json"
        if not marker.exists():
            continue
        summary = read_json(marker).get("summary", {})
        by_cause: dict[str, list[str]] = {}
        for item, reason in summary.get("items", []):
            by_cause.setdefault(cause_of(reason), []).append(item)
        for where, message in summary.get("ignored_lines", []):
            by_cause.setdefault(f"ignored line: {cause_of(message)}", []).append(where)
        rows += [(stage, cause, ids) for cause, ids in by_cause.items()]
    return rows


def format_skip_table(rows: list[tuple[str, str, list[str]]]) -> list[str]:
    """The rows as an aligned text table ``stage | cause | count``. The last line counts distinct
    items: a later stage names again what an earlier one dropped (``hybrid``: "no tri1 alignment").

    >>> print("\\n".join(format_skip_table([("prepare", "empty transcript", ["u1"]),
    ...                                       ("tri1", "alignment failed", ["u2"]),
    ...                                       ("hybrid", "no tri1 alignment", ["u2"])])))
    stage    cause             count
    prepare  empty transcript      1
    tri1     alignment failed      1
    hybrid   no tri1 alignment     1
    distinct items                 2
    """
    width = max([len(cause) for _, cause, _ in rows] + [len("cause")])
    lines = [f"{'stage':<8} {'cause':<{width}} {'count':>5}"]
    lines += [f"{stage:<8} {cause:<{width}} {len(ids):>5}" for stage, cause, ids in rows]
    distinct = len({item for _, _, ids in rows for item in ids})
    lines.append(f"{'distinct items':<{width + 9}} {distinct:>5}")
    return lines


def log_skip_table(ws, stages: list[str]) -> list[tuple[str, str, list[str]]]:
    """Log one table of what ``stages`` skipped (stage x cause x count) and write it with the ids of
    every row to ``exp/<c>/log/skipped.log``; returns the rows."""
    rows = skip_rows(ws.done_dir, stages)
    if not rows:
        log.info("[%s] %s: nothing skipped", ws.corpus, ", ".join(stages))
        return rows
    table = format_skip_table(rows)
    path = ws.log_dir / "skipped.log"
    with atomic_open(path) as f:
        f.write("\n".join(table) + "\n\n")
        for stage, cause, ids in rows:
            f.write(f"{stage}\t{cause}\t{' '.join(ids)}\n")
    log.warning("[%s] skipped over the stages (ids per row in %s):\n%s", ws.corpus, path, "\n".join(table))
    return rows
