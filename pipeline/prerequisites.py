"""What to run first: a stage's missing input -> the stage that writes it, as one line.

A stage that finds a file of the workspace missing (``data/<c>/lang/phones.txt``) names the stage
that writes it (:data:`~weakalign.pipeline.recipe.WRITES`) and the command that makes it and
every other prerequisite that has not run (:func:`~weakalign.pipeline.recipe.prerequisites`,
judged by their done-markers), instead of a ``FileNotFoundError`` traceback:

>>> import tempfile
>>> ws = Workspace("an4", data_root=tempfile.mkdtemp(), exp_root=tempfile.mkdtemp())
>>> writer_of(ws, ws.data / "lang" / "phones.txt"), writer_of(ws, ws.exp / "tri1_ali" / "ali.1.gz")
('lang', 'tri1')
>>> writer_of(ws, "/elsewhere/lexicon.txt") is None
True
>>> message = str(missing_output(ws, "tri1", ws.exp / "mono" / "final.mdl"))
>>> message.split(" have not run")[0].split(": ")[-1]
'prepare, features, lang and mono'
>>> message.split("run `")[1].split("`")[0].replace(str(ws.data_root), "D").replace(str(ws.exp_root), "E")
'weakalign align an4 --data-root D --exp-root E --stop-after mono'
"""

from __future__ import annotations

import os
from fnmatch import fnmatch
from pathlib import Path

from .recipe import DEPENDS_ON, WRITES, prerequisites
from .stage import MissingInput, is_done
from .workspace import Workspace


def _relative(path: str | os.PathLike, root: Path) -> Path | None:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return None


def writer_of(ws: Workspace, path: str | os.PathLike) -> str | None:
    """The stage that writes ``path`` (a done-marker: its stage), or None for a path no stage writes."""
    for kind, root in (("data", ws.data), ("exp", ws.exp)):
        rel = _relative(path, root)
        if rel is None or not rel.parts:
            continue
        if kind == "exp" and rel.parts[0] == "done" and rel.stem in DEPENDS_ON:
            return rel.stem
        for stage, patterns in WRITES.items():
            if any(fnmatch(f"{kind}/{rel.parts[0]}", pattern) for pattern in patterns):
                return stage
    return None


def _moved(ws: Workspace) -> bool:
    return Path(ws.data_root) != Path("data") or Path(ws.exp_root) != Path("exp")


def _roots(ws: Workspace) -> str:
    """The command-line options that point a command at ``ws``'s roots, when not the defaults."""
    return f" --data-root {ws.data_root} --exp-root {ws.exp_root}" if _moved(ws) else ""


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def next_step(ws: Workspace, stage: str, writer: str) -> str:
    """What to run so that ``stage`` finds ``writer``'s outputs: ``writer`` alone, ``align`` up to
    the last prerequisite of ``stage`` that has not run, or ``writer --force`` when its
    done-marker says it ran but the file is gone."""
    corpus = f"{ws.corpus}{_roots(ws)}"
    if is_done(ws, writer):
        return f"its done-marker is there but the file is not: rerun `weakalign {writer} {corpus} --force`"
    # A recipe stage needs all its prerequisites, not just the writer (one command fixes them all);
    # another stage (an E2E run) at least the writer's.
    needed = prerequisites(stage) if stage in DEPENDS_ON else prerequisites(writer) + [writer]
    not_run = [s for s in needed if not is_done(ws, s)] or [writer]
    if not_run == [writer]:
        return f"run `weakalign {writer} {corpus}` first (or `make align`)"
    last = not_run[-1]
    make_roots = f" DATA={ws.data_root} EXP={ws.exp_root}" if _moved(ws) else ""
    return (f"{_listed(not_run)} have not run: run `weakalign align {corpus} --stop-after {last}` first "
            f"(make align CORPUS={ws.corpus} STOP_AFTER={last}{make_roots})")


def missing_output(ws: Workspace, stage: str, path: str | os.PathLike, writer: str | None = None) -> MissingInput:
    """The one-line error of ``stage`` not finding ``path``, which ``writer`` (default: :func:`writer_of`) writes."""
    writer = writer or writer_of(ws, path)
    return MissingInput(f"{stage}: {path} not found (written by {writer}): {next_step(ws, stage, writer)}")


def as_missing_input(ws: Workspace, stage: str, error: FileNotFoundError) -> MissingInput | None:
    """``error`` as the one-line :class:`MissingInput` when it is about a file another stage
    writes; None when it is not (a file outside the workspace, or the stage's own)."""
    if isinstance(error, MissingInput) or not error.filename:
        return None
    writer = writer_of(ws, error.filename)
    if writer is None or writer == stage:
        return None
    return missing_output(ws, stage, error.filename, writer)
