"""Atomic file output: write to a temporary name beside the target, then rename.

A crash leaves either the old file or no file, never half a file, so a rerun
can trust whatever it finds under its final name.

>>> from pathlib import Path; import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> with atomic_path(d / "out.txt") as tmp:
...     _ = tmp.write_text("hello")
>>> (d / "out.txt").read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _temp_name(path: Path) -> Path:
    # Keep the real suffixes last: lhotse and gzip choose their format from them.
    return path.with_name(f".tmp{os.getpid()}.{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces the directory ``path`` (and all it held)
    only if the block succeeds: readers see the old tree or the new one, never a half-written one
    (and, for the instant between two renames, none: a rerun then redoes the work).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_dir(d / "grids") as tmp:
    ...     _ = (tmp / "a.txt").write_text("a")
    >>> sorted(p.name for p in (d / "grids").iterdir())
    ['a.txt']
    """
    path = Path(path)
    tmp = _temp_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    old = path.with_name(f".old{os.getpid()}.{path.name}")
    try:
        yield tmp
        # Renames, not a removal, between the old tree and the new: removing a large tree takes long.
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[Any]:
    """``open`` whose result appears under ``path`` only when closed without error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` with the result appearing under ``path`` only when complete, and the same
    bytes for the same ``obj`` whatever the temporary name: given a file *name*, torch's zip writer
    prefixes every record with that name's stem (here ``.tmp<pid>.epoch-1/data.pkl``); given an
    open file it uses the fixed prefix ``archive/``."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def unwritable_reason(directory: str | os.PathLike) -> str | None:
    """Why nothing can be written under ``directory`` (created if missing), or None if it can.

    Tried for real (create the directory, create and remove a file in it) rather than read
    from the mode bits: root ignores those, a read-only mount or an immutable directory does not.

    >>> unwritable_reason(tempfile.mkdtemp()) is None
    True
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None
