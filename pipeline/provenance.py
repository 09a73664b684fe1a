"""Which code produced an output: package versions and the git commit of this checkout.

Recorded in every stage's done-marker (``code``) and in the E2E results' environment, so a result
can be traced to the code that made it. Not part of a stage's identity: new code does not redo a
finished stage by itself (a changed option or input does).

>>> sorted(code_version())
['git_hash', 'weakalign']
"""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_info() -> dict:
    """Commit hash (``-dirty`` when the work tree has uncommitted changes) and its date."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_hash": "unknown", "git_commit_date": "unknown"}
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_hash": commit + ("-dirty" if dirty else ""),
            "git_commit_date": _git("log", "-1", "--format=%cd") or "unknown"}


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The weakalign version and git commit of this process's code (looked up once per process)."""
    return {"weakalign": package_version("weakalign"), "git_hash": git_info()["git_hash"]}
