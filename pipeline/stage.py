"""Resumable, logged stages.

A stage is a function ``fn(ws, **options) -> dict``. :func:`run_stage` runs it
once: it logs to ``exp/<corpus>/log/<stage>.log`` with the wall time, and writes
the done-marker ``exp/<corpus>/done/<stage>.json`` *last*. The summary a stage
returns may hold ``"outputs"``: the paths whose presence means the stage is complete.

Options are part of a stage's identity (:mod:`weakalign.pipeline.options`): a later
call is skipped ("already done") only while the marker and its outputs exist and the
request matches the options it ran with; a request that differs redoes the stage
(one log line names each changed option) and makes the stages that read its outputs
stale (:func:`weakalign.pipeline.recipe.dependents`). Options not given again are
the ones last asked for, not the defaults. ``force=True`` redoes it regardless.

>>> import tempfile
>>> ws = Workspace("toy", data_root=tempfile.mkdtemp(), exp_root=tempfile.mkdtemp())
>>> calls = []
>>> def hello(ws, name="world"):
...     calls.append(name)
...     return {"greeted": name}
>>> run_stage("hello", ws, hello, name="x")["greeted"]
'x'
>>> _ = run_stage("hello", ws, hello, name="x")   # done with the same options: skipped
>>> _ = run_stage("hello", ws, hello)             # no new options: the recorded name="x" holds
>>> run_stage("hello", ws, hello, name="y")["greeted"]   # another option: redone
'y'
>>> calls
['x', 'y']

:func:`planning` says what calls would do without running them (``weakalign align --dry-run``):

>>> with planning() as plan:
...     try:
...         run_stage("hello", ws, hello, name="z")
...     except PlannedStage as planned:
...         print(planned)
hello: would run (name: 'y' -> 'z')
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .io import read_json, unwritable_reason, write_json
from .options import (RUNTIME_OPTIONS, input_changes, input_fingerprint, option_changes, record_request,
                      recorded_request, resolved_defaults, signature_defaults, to_json)
from .provenance import code_version
from .workspace import Workspace

log = logging.getLogger("weakalign")


class TqdmHandler(logging.Handler):
    """Writes log lines to the current ``sys.stderr`` through ``tqdm.write``: a progress bar there
    is cleared first and drawn again below the line, instead of the line landing after a
    half-drawn bar and every later redraw leaving a stale copy of the bar above. (The stream is
    looked up per line, so a redirected ``sys.stderr``, as click's test runner makes, gets them.)"""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # as StreamHandler: a logging failure must not end the program
            self.handleError(record)


def setup_console_logging(level: int = logging.INFO) -> None:
    if any(getattr(h, "_weakalign_console", False) for h in log.handlers):
        return
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler._weakalign_console = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def stage_log_path(ws: Workspace, name: str) -> Path:
    return ws.log_dir / f"{name}.log"


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


class MissingInput(FileNotFoundError):
    """An input a stage needs is not there (no lexicon, no alignment dir): the message says
    which and what to do; stage commands print it as one line."""


class UnwritableOutput(MissingInput):
    """A directory the stage writes to cannot be written (read-only ``data/`` or ``exp/``). Raised
    before the stage starts, and a :class:`MissingInput` so stage commands print it as one line."""


def check_outputs_writable(name: str, ws: Workspace) -> None:
    """Fail before any work with one line naming the first directory ``name`` writes to but cannot
    (``exp/<c>`` for its log and marker; ``data/<c>`` too for the stages of
    :data:`recipe.WRITES_DATA`)."""
    from .recipe import WRITES_DATA

    roots = [("exp", ws.exp)] + ([("data", ws.data)] if name in WRITES_DATA else [])
    for root, directory in roots:
        reason = unwritable_reason(directory)
        if reason:
            raise UnwritableOutput(f"{name}: cannot write to {directory} ({reason}); make it writable "
                                   f"or give another --{root}-root")


def log_failure(ws: Workspace, name: str, error: BaseException) -> None:
    """Append ``error`` with its traceback to the stage's log file only (the console shows one
    line, see :mod:`weakalign.pipeline.cli`), and note the log on the error as ``stage_log``
    (the innermost stage's, when stages nest)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "[%s] stage %s: failed: %s: %s",
                            (ws.corpus, name, type(error).__name__, error), (type(error), error, error.__traceback__))
    try:
        with _StageLog(stage_log_path(ws, name)) as stage_log:
            stage_log.handler.handle(record)  # this handler only: the console is the CLI's to write to
    except OSError:  # no writable log: the error itself must still reach the caller
        return
    if getattr(error, "stage_log", None) is None:
        try:
            error.stage_log = str(stage_log.path)  # type: ignore[attr-defined]
        except AttributeError:  # an exception type that takes no attributes: the log still has it
            pass


def marker_path(ws: Workspace, name: str) -> Path:
    return ws.done_dir / f"{name}.json"


def is_done(ws: Workspace, name: str) -> bool:
    marker = marker_path(ws, name)
    if not marker.exists():
        return False
    outputs = read_json(marker).get("summary", {}).get("outputs", [])
    return all(Path(p).exists() for p in outputs)


def invalidate(ws: Workspace, name: str) -> None:
    """Drop the done-marker (the recorded request, ``exp/<c>/options/<name>.json``, stays)."""
    marker_path(ws, name).unlink(missing_ok=True)


def _invalidate_dependents(ws: Workspace, name: str) -> None:
    """A stage being redone makes the stages that read its outputs stale (:func:`recipe.dependents`)."""
    from .recipe import dependents

    stale = [later for later in dependents(name) if marker_path(ws, later).exists()]
    for later in stale:
        invalidate(ws, later)
    if stale:
        log.info("[%s] %s is being redone: %s now stale and will rerun", ws.corpus, name, ", ".join(stale))


class PlannedStage(Exception):
    """Raised by :func:`run_stage` instead of running while :func:`planning`: ``action`` is
    ``"done"`` (the finished run matches the request), ``"run"``, or ``"maybe"`` (done, but it reads
    the outputs of a stage that would run first: redone if they change); ``reasons`` say why."""

    def __init__(self, name: str, action: str, reasons: list[str]):
        super().__init__(name, action, reasons)
        self.name, self.action, self.reasons = name, action, reasons

    def __str__(self) -> str:
        said = {"done": "done, nothing to redo", "run": "would run", "maybe": "may run"}[self.action]
        return f"{self.name}: {said}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


_PLAN: dict | None = None   # while planning: {"actions": {stage: action}, "reads": {stage: [stages]}}


@contextlib.contextmanager
def planning(reads: dict[str, list[str]] | None = None):
    """Within it, :func:`run_stage` decides and raises :class:`PlannedStage` instead of running. A
    stage after one that would run is stale when it reads that one's outputs (:func:`recipe.dependents`);
    ``reads``: other stages whose outputs a stage reads through a declared input (the hybrid, its
    source GMM's alignments), which redo it only if their content changes."""
    global _PLAN
    _PLAN = {"actions": {}, "reads": reads or {}}
    try:
        yield _PLAN["actions"]
    finally:
        _PLAN = None


def is_planning() -> bool:
    return _PLAN is not None


def _redo_reasons(name: str, ws: Workspace, request: "StageRequest", force: bool) -> tuple[str, list[str]]:
    """Whether a call runs the stage, as ``(why, reasons)``: ``why`` is ``"done"`` (a finished run
    matches the request; no reasons), ``"force"``, ``"unfinished"`` or ``"changed"`` (the request's
    differences from the finished run)."""
    if force:
        return "force", ["--force"]
    if not marker_path(ws, name).exists():
        return "unfinished", ["never finished"]
    if not is_done(ws, name):
        return "unfinished", ["outputs of the finished run are missing"]
    changes = request.changes_since(read_json(marker_path(ws, name)))
    return ("changed", changes) if changes else ("done", [])


def _plan(name: str, ws: Workspace, request: "StageRequest", force: bool) -> PlannedStage:
    from .recipe import dependents

    _, reasons = _redo_reasons(name, ws, request, force)
    actions = _PLAN["actions"]
    upstream = [e for e, a in actions.items() if a != "done" and name in dependents(e)]
    reasons += [f"{e} would run first" for e in upstream if actions[e] == "run"]
    read = [e for e in _PLAN["reads"].get(name, ()) if e not in upstream]
    if reasons:   # it runs anyway; a stage whose outputs it reads and that runs first is named too
        reasons += [f"{e} would run first" for e in read if actions.get(e) == "run"]
    action = "run" if reasons else "done"
    if action == "done":
        maybe = [e for e in upstream if actions[e] == "maybe"]
        maybe += [e for e in read if actions.get(e, "done") != "done" and e not in maybe]
        if maybe:
            action, reasons = "maybe", [f"if {e}'s rerun changes its outputs, which {name} reads" for e in maybe]
    actions[name] = action
    return PlannedStage(name, action, reasons)


@dataclass
class StageRequest:
    """One call of a stage: what the stage function gets and what identifies its result."""

    kwargs: dict  # the stage function's options (runtime options apart)
    runtime: dict  # RUNTIME_OPTIONS and callables: passed on, never compared or recorded
    requested: dict  # the user's options, now or recorded from an earlier request (JSON)
    options: dict  # every option the stage runs with, defaults included (JSON)
    inputs: dict  # the declared inputs' content (:func:`options.declares_inputs`)

    @classmethod
    def build(cls, name: str, ws: Workspace, fn: Callable, given: dict, defaults: dict | None) -> StageRequest:
        """``given`` options over the recorded request over ``defaults`` (the CLI's, for options
        the user did not give)."""
        runtime = {k: v for k, v in {**(defaults or {}), **given}.items() if k in RUNTIME_OPTIONS or callable(v)}
        given = {k: v for k, v in given.items() if k not in runtime}
        defaults = {k: v for k, v in (defaults or {}).items() if k not in runtime}
        recorded = recorded_request(ws, name, fn)
        kwargs = {**defaults, **recorded, **given}
        return cls(kwargs=kwargs, runtime=runtime, requested={**recorded, **to_json(given)},
                   options=to_json({**signature_defaults(fn), **kwargs, **resolved_defaults(fn, ws, kwargs)}),
                   inputs=input_fingerprint(fn, ws, kwargs))

    def changes_since(self, marker: dict) -> list[str]:
        """What differs from the finished run of ``marker``; [] when the request matches it."""
        effective = {k: self.options.get(k, v) for k, v in self.requested.items()}  # None: the value it resolves to
        return option_changes(marker.get("options"), effective) + input_changes(marker.get("inputs"), self.inputs)


def run_stage(name: str, ws: Workspace, fn: Callable[..., dict], /, *, force: bool = False,
              defaults: dict | None = None, **options) -> dict:
    """Run ``fn(ws, **options)`` as stage ``name`` unless a finished run matches the request.

    ``options`` are the caller's choices; ``defaults`` fill in the options neither given now nor
    recorded from an earlier request (see :mod:`weakalign.pipeline.options`).
    """
    try:
        return _run_stage(name, ws, fn, force=force, defaults=defaults, options=options)
    except PlannedStage:
        raise
    except Exception as e:
        log_failure(ws, name, e)
        raise


def _run_stage(name: str, ws: Workspace, fn: Callable[..., dict], *, force: bool, defaults: dict | None,
               options: dict) -> dict:
    setup_console_logging()
    request = StageRequest.build(name, ws, fn, options, defaults)
    if _PLAN is not None:
        raise _plan(name, ws, request, force)
    marker = marker_path(ws, name)
    why, reasons = _redo_reasons(name, ws, request, force)
    if why == "done":
        log.info("[%s] %s: already done with these options (%s); --force to redo", ws.corpus, name, marker)
        return read_json(marker)["summary"]
    if why == "changed":
        log.info("[%s] %s: the request differs from the finished run, redoing it: %s",
                 ws.corpus, name, "; ".join(reasons))
    check_outputs_writable(name, ws)
    record_request(ws, name, request.requested)
    # Whatever the old marker said no longer holds, nor do the results built on this stage's outputs.
    invalidate(ws, name)
    _invalidate_dependents(ws, name)
    with _StageLog(stage_log_path(ws, name)):
        log.info("[%s] stage %s: start (options: %s)", ws.corpus, name, {**request.options, **{
            k: v for k, v in request.runtime.items() if not callable(v)}})
        start = time.time()
        summary = fn(ws, **request.kwargs, **request.runtime) or {}
        seconds = time.time() - start
        summary["outputs"] = [str(p) for p in summary.get("outputs", [])]
        log.info("[%s] stage %s: done in %.1f s", ws.corpus, name, seconds)
    write_json(marker, {
        "stage": name,
        "corpus": ws.corpus,
        "options": request.options,
        "requested": sorted(request.requested),
        "inputs": request.inputs,
        "seconds": round(seconds, 3),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "code": code_version(),   # provenance only: new code alone does not make a stage stale
        "summary": summary,
    })
    return summary
