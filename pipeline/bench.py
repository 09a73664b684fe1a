"""``weakalign bench``: every package's benchmarks, each writing ``exp/bench/<name>.json``.

A benchmark is a function ``fn(ws, nj) -> dict`` listed in ``BENCHMARKS``
of a module in ``BENCHMARK_MODULES`` as ``(name, fn)``; one that also takes a
``results_root`` keyword gets ``--results-root`` (the published runs) when it is given.
Figures are measured, with the machine recorded beside them, never asserted in tests.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import platform
import time
from pathlib import Path

from .io import write_json
from .workspace import Workspace

log = logging.getLogger("weakalign")

BENCHMARK_MODULES = (
    "weakalign.pipeline.benchmarks",
    "weakalign.kaldi_steps.benchmarks",
    "weakalign.kaldi_steps.hybrid.benchmarks",
    "weakalign.align.benchmarks",
    "weakalign.e2e.benchmarks",
    "weakalign.e2e.benchmarks_decode",
    "weakalign.e2e.time_to_accuracy",
)


def machine_info() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def all_benchmarks() -> list[tuple[str, object]]:
    found = []
    for name in BENCHMARK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        found.extend(module.BENCHMARKS)
    return found


def run_benchmarks(ws: Workspace, nj: int, only: tuple[str, ...] = (),
                   results_root: str | Path | None = None) -> list[Path]:
    out_dir = Path(ws.exp_root) / "bench"
    written = []
    for name, fn in all_benchmarks():
        if only and name not in only:
            continue
        log.info("bench %s on %s ...", name, ws.corpus)
        start = time.time()
        takes_results = "results_root" in inspect.signature(fn).parameters
        result = fn(ws, nj, results_root=results_root) if results_root is not None and takes_results else fn(ws, nj)
        result = {"benchmark": name, "corpus": ws.corpus, "wall_s": round(time.time() - start, 3),
                  "machine": machine_info(), **result}
        path = out_dir / f"{name}.json"
        write_json(path, result)
        log.info("bench %s -> %s", name, path)
        written.append(path)
    return written
