"""Resumable, logged stages.

A stage is a function ``fn(ws, **options) -> dict``. :func:`run_stage` runs it
once: it logs to ``exp/<corpus>/log/<stage>.log`` with the wall time, and writes
the done-marker ``exp/<corpus>/done/<stage>.json`` *last*. A later call skips the
stage while the marker exists and every output it lists still exists;
``force=True`` redoes it. The summary a stage returns may hold ``"outputs"``: the
paths whose presence means the stage is complete.

>>> import tempfile
>>> ws = Workspace("toy", data_root=tempfile.mkdtemp(), exp_root=tempfile.mkdtemp())
>>> calls = []
>>> def hello(ws, name):
...     calls.append(name)
...     return {"greeted": name}
>>> run_stage("hello", ws, hello, name="x")["greeted"]
'x'
>>> _ = run_stage("hello", ws, hello, name="x")   # done: skipped
>>> calls
['x']
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .io import read_json, write_json
from .workspace import Workspace

log = logging.getLogger("weakalign")


def setup_console_logging(level: int = logging.INFO) -> None:
    if any(getattr(h, "_weakalign_console", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler._weakalign_console = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


class _StageLog:
    """Adds a file handler for one stage's log for the duration of a ``with`` block."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self.handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
        self.handler.close()


def marker_path(ws: Workspace, name: str) -> Path:
    return ws.done_dir / f"{name}.json"


def is_done(ws: Workspace, name: str) -> bool:
    marker = marker_path(ws, name)
    if not marker.exists():
        return False
    outputs = read_json(marker).get("summary", {}).get("outputs", [])
    return all(Path(p).exists() for p in outputs)


def invalidate(ws: Workspace, name: str) -> None:
    marker_path(ws, name).unlink(missing_ok=True)


def _invalidate_downstream(ws: Workspace, name: str) -> None:
    """A stage that ran anew makes every later stage of the recipe stale."""
    from .recipe import stages_after

    for later in stages_after(name):
        if marker_path(ws, later).exists():
            log.info("[%s] %s was redone: %s is now stale and will rerun", ws.corpus, name, later)
            invalidate(ws, later)


def run_stage(name: str, ws: Workspace, fn: Callable[..., dict], /, *, force: bool = False, **options) -> dict:
    """Run ``fn(ws, **options)`` as stage ``name`` unless it is already complete."""
    setup_console_logging()
    marker = marker_path(ws, name)
    if not force and is_done(ws, name):
        log.info("[%s] %s: already done (%s); --force to redo", ws.corpus, name, marker)
        return read_json(marker)["summary"]
    # A marker that outlives its outputs is stale: drop it before redoing the work.
    invalidate(ws, name)
    with _StageLog(ws.log_dir / f"{name}.log"):
        log.info("[%s] stage %s: start (options: %s)", ws.corpus, name,
                 {k: v for k, v in options.items() if not callable(v)})
        start = time.time()
        summary = fn(ws, **options) or {}
        seconds = time.time() - start
        summary["outputs"] = [str(p) for p in summary.get("outputs", [])]
        log.info("[%s] stage %s: done in %.1f s", ws.corpus, name, seconds)
    _invalidate_downstream(ws, name)
    write_json(marker, {
        "stage": name,
        "corpus": ws.corpus,
        "seconds": round(seconds, 3),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "summary": summary,
    })
    return summary
