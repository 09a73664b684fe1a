"""The environment a result was produced in (as ESPnet's RESULTS.md record it).

>>> env = environment(device="cpu")
>>> sorted(env)[:3]
['date', 'device', 'git_commit_date']
>>> print(environment_markdown({"python": "3.11", "git_hash": "abc"}))
- python: `3.11`
- git_hash: `abc`

A table over several published runs shows the environment their scoring recorded (each run's
``RESULTS.md``), so it says where its numbers came from, not where the table was rebuilt:

>>> print(environment_markdown(runs_environment([
...     {"date": "2026-11-30T23:42:03+00:00", "python": "3.11.7", "git_hash": "a1b168ab682d8390"},
...     {"date": "2026-11-29T08:00:00+00:00", "python": "3.11.7", "git_hash": "f166b98f71aadf92-dirty"}])))
- date: `2026-11-29T08:00:00+00:00 ... 2026-11-30T23:42:03+00:00`
- python: `3.11.7`
- git_hash: `a1b168ab, f166b98f-dirty`
"""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

from ..pipeline.provenance import git_info, package_version

PACKAGES = ("torch", "lhotse", "kaldi-hmm-gmm", "kaldifst", "kaldialign", "kaldi-native-fbank",
            "sentencepiece", "numpy", "weakalign")

def package_versions() -> dict[str, str]:
    return {name: package_version(name) for name in PACKAGES}


def device_info(device: str | None = None) -> str:
    import torch

    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: str | None = None) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{k: v for k, v in package_versions().items()},
        **git_info(),
        "device": device_info(device),
    }


def environment_markdown(env: dict) -> str:
    return "\n".join(f"- {k}: `{v}`" for k, v in env.items())


_ENV_LINE = re.compile(r"^- ([\w-]+): `(.*)`$")
#: git's default date format, as ``git_info`` records ``git_commit_date``.
_GIT_DATE = "%a %b %d %H:%M:%S %Y %z"


def recorded_environment(results_md: Path) -> dict[str, str] | None:
    """The ``## Environment`` block of a scored run's ``RESULTS.md`` (:func:`environment` as
    ``weakalign score`` wrote it), or None when the file or the block is missing."""
    if not results_md.exists():
        return None
    env, inside = {}, False
    for line in results_md.read_text().splitlines():
        if line.startswith("## "):
            if inside:
                break
            inside = line == "## Environment"
        elif inside and (m := _ENV_LINE.match(line)):
            env[m.group(1)] = m.group(2)
    return env or None


def runs_environment(envs: list[dict[str, str]]) -> dict[str, str]:
    """One environment for several runs: a key's value where they agree; else the span of their
    dates, their commits (8 hex digits each), or every distinct value."""
    keys = list(dict.fromkeys(k for env in envs for k in env))
    merged = {}
    for key in keys:
        values = sorted({env[key] for env in envs if key in env})
        if len(values) == 1:
            merged[key] = values[0]
        elif key == "date":
            merged[key] = f"{values[0]} ... {values[-1]}"
        elif key == "git_commit_date":
            dates = sorted(values, key=lambda v: _parse_git_date(v) or datetime.datetime.min.replace(
                tzinfo=datetime.timezone.utc))
            merged[key] = f"{dates[0]} ... {dates[-1]}"
        elif key == "git_hash":
            merged[key] = ", ".join(sorted({_short_commit(v) for v in values}))
        else:
            merged[key] = " / ".join(values)
    return merged


def _parse_git_date(value: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(value, _GIT_DATE)
    except ValueError:
        return None


def _short_commit(value: str) -> str:
    commit, dirty, _ = value.partition("-dirty")
    return commit[:8] + ("-dirty" if dirty else "")
