"""Collects the items a stage had to skip, so none is dropped silently.

>>> r = SkipReport("prepare")
>>> r.skip("utt1", "empty transcript")
>>> r.count
1
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("weakalign")


@dataclass
class SkipReport:
    """Skipped items with their reasons; ``summary()`` goes into the stage log and marker."""

    stage: str
    items: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, item_id: str, reason: str) -> None:
        self.items.append((item_id, reason))
        log.warning("%s: skipping %s: %s", self.stage, item_id, reason)

    def warn(self, item_id: str, message: str) -> None:
        """An item kept but changed (e.g. resampled): said, not counted as skipped."""
        log.warning("%s: %s: %s", self.stage, item_id, message)

    @property
    def count(self) -> int:
        return len(self.items)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for _, reason in self.items))

    def summary(self) -> dict:
        return {"skipped": self.count, "reasons": self.reasons(), "items": [list(x) for x in self.items]}

    def log_summary(self) -> None:
        if self.count:
            log.warning("%s: skipped %d item(s): %s", self.stage, self.count, self.reasons())
        else:
            log.info("%s: skipped 0 items", self.stage)
