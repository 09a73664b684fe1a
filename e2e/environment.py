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
