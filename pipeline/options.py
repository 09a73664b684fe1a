"""What makes a stage's result what it is: its options and the content of its cheap inputs.

Two records, both JSON (paths as strings, tuples as lists):

- ``exp/<c>/options/<stage>.json``: the options the user asked for (on the command line, in
  ``align --config``, or as keyword arguments of :func:`~weakalign.pipeline.stage.run_stage`),
  written when the stage starts. Nothing deletes it when the stage becomes stale, so a stage
  that reruns later -- by itself, through ``align``, or because an upstream stage was
  redone -- runs with what the user asked for, not with the defaults. Options given anew
  replace the recorded ones, one by one.
- the done-marker ``exp/<c>/done/<stage>.json``: ``options`` (every option the stage ran with,
  defaults included), ``requested`` (which of them the user chose) and ``inputs`` (content
  hashes of inputs such as the lexicon or an alignment dir, where a stage declares them with
  :func:`declares_inputs`).

A request matches a finished run when every requested option equals the one it ran with and
every declared input still hashes the same; only then is the stage "already done".
:data:`RUNTIME_OPTIONS` say how a stage runs, not what it computes: never compared, never reused.

>>> to_json({"lexicon": Path("a.dic"), "speed": (0.9, 1.1), 3: None})
{'lexicon': 'a.dic', 'speed': [0.9, 1.1], '3': None}
>>> option_changes({"num_leaves": 300, "beam": 10.0}, {"num_leaves": 500, "beam": 10.0})
['num_leaves: 300 -> 500']
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable

from .io import read_json, write_json
from .workspace import Workspace

log = logging.getLogger("weakalign")

#: Options that change how a stage runs (parallel jobs, the Dask cluster that runs them, the device),
#: not its result. ``cluster`` above all: for a given ``nj`` the GMM stages give the same bytes on any
#: cluster (:mod:`weakalign.kaldi_steps.execution`), so moving a workspace to another one redoes nothing.
RUNTIME_OPTIONS = frozenset({"nj", "cluster", "device", "threads"})

_UNRECORDED = "(not recorded)"


def to_json(value: Any) -> Any:
    """``value`` as it reads back from JSON: paths as strings, tuples and sets as lists, keys as strings."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_json(v) for v in value), key=repr)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return str(value)


def options_path(ws: Workspace, name: str) -> Path:
    return ws.exp / "options" / f"{name}.json"


def recorded_request(ws: Workspace, name: str, fn: Callable) -> dict:
    """The options the user last asked ``name`` to run with ({} when none), less any that ``fn``
    no longer takes (said once, so a renamed option cannot break a rerun)."""
    path = options_path(ws, name)
    if not path.exists():
        return {}
    request = read_json(path).get("options", {})
    unknown = [k for k in request if not _accepts(fn, k)]
    if unknown:
        log.warning("[%s] %s: recorded option(s) %s are no longer options of the stage; dropped (%s)",
                    ws.corpus, name, ", ".join(unknown), path)
    return {k: v for k, v in request.items() if k not in unknown}


def recorded_option(ws: Workspace, name: str, option: str):
    """One option of the request last recorded for stage ``name`` (``None`` when not recorded)."""
    path = options_path(ws, name)
    return read_json(path).get("options", {}).get(option) if path.exists() else None


def record_request(ws: Workspace, name: str, request: dict) -> None:
    write_json(options_path(ws, name), {"stage": name, "options": request})


def _accepts(fn: Callable, option: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or otherwise opaque callable: assume it does
        return True
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def signature_defaults(fn: Callable) -> dict:
    """The keyword defaults of a stage function (``ws`` and runtime options left out): recorded
    in the marker so that it names every option the stage ran with, also for Python callers."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params
            if p.default is not p.empty and p.name not in RUNTIME_OPTIONS
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def option_changes(ran_with: dict | None, request: dict) -> list[str]:
    """``"name: old -> new"`` for every requested option that differs from what the stage ran
    with; a marker that recorded no options (written before they were) differs from any request."""
    if ran_with is None:
        return [f"{k}: {_UNRECORDED} -> {v!r}" for k, v in request.items()]
    return [f"{k}: {ran_with.get(k, _UNRECORDED)!r} -> {v!r}" for k, v in request.items()
            if ran_with.get(k, _UNRECORDED) != v]


def input_changes(ran_on: dict | None, inputs: dict) -> list[str]:
    """``"input: old -> new"`` for every declared input whose content differs (a marker that
    recorded no inputs is taken as matching: it cannot tell)."""
    if ran_on is None:
        return []
    return [f"{k}: {ran_on.get(k, _UNRECORDED)} -> {inputs.get(k, _UNRECORDED)}"
            for k in sorted(set(ran_on) | set(inputs)) if ran_on.get(k) != inputs.get(k)]


def declares_inputs(fingerprint: Callable[[Workspace, dict], dict]):
    """Decorate a stage function whose result depends on files that its options only name (a
    lexicon, an alignment dir): ``fingerprint(ws, options)`` returns ``{input: description}``,
    e.g. from :func:`content_digest`, compared with the marker's on every request."""
    def declare(fn):
        fn.input_fingerprint = fingerprint
        return fn

    return declare


def resolves_defaults(resolve: Callable[[Workspace, dict], dict]):
    """Decorate a stage function whose options default to ``None`` for "the corpus's default"
    (tri1's ``num_leaves``, the hybrid's ``passes``): ``resolve(ws, options)`` returns the values
    such options take. The marker records those as the options the stage ran with, so asking for
    the default value by name matches the finished run instead of redoing it, and a change reads
    ``num_leaves: 300 -> 400``, not ``None -> 400``."""
    def declare(fn):
        fn.resolve_defaults = resolve
        return fn

    return declare


def resolved_defaults(fn: Callable, ws: Workspace, options: dict) -> dict:
    resolve = getattr(fn, "resolve_defaults", None)
    return resolve(ws, options) if resolve else {}


def input_fingerprint(fn: Callable, ws: Workspace, options: dict) -> dict:
    fingerprint = getattr(fn, "input_fingerprint", None)
    return fingerprint(ws, options) if fingerprint else {}


def content_digest(paths, *, gunzip: bool = False) -> str:
    """``sha256:<16 hex>`` of the files' names and contents (``gunzip``: of their ``.gz``
    members' uncompressed bytes, since gzip stamps a time into its header)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode() + b"\0")
        opener = gzip.open if gunzip and path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"
