"""The environment a result was produced in (as ESPnet's RESULTS.md record it).

>>> env = environment(device="cpu")
>>> sorted(env)[:3]
['date', 'device', 'git_commit_date']
>>> print(environment_markdown({"python": "3.11", "git_hash": "abc"}))
- python: `3.11`
- git_hash: `abc`
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("torch", "lhotse", "kaldi-hmm-gmm", "kaldifst", "kaldialign", "kaldi-native-fbank",
            "sentencepiece", "numpy", "weakalign")

REPO = Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


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
