"""``weakalign sweep``: train + score a grid of configs, resumably, and aggregate the results.

A grid is a base config (default ``aux_ls0.5_l3``) and axes ``key=v1,v2,...``;
the short keys ``m``, ``layer`` and ``aux_weight``/``w`` mean the config keys
``aux_smoothing``, ``aux_layer`` and ``aux_weight``; any other key is a config
key as it stands (e.g. ``ctc_weight``). Every grid point x seed becomes the run
``sweep_<base>_<key><value>..._seed<n>`` in ``exp/<c>/e2e/``, trained with
``weakalign train --config <base> --set key=value ... --run <name>`` and scored
with ``weakalign score --run <name>``, each in a subprocess. The points are jobs of the
execution layer (:class:`~weakalign.kaldi_steps.execution.Executor`), ``jobs`` at a time: in this
process one after the other for ``jobs=1``, else each a Dask task on a local cluster of ``jobs``
worker processes, or on ``cluster`` (a scheduler's address, or ``slurm``/``pbs``/``sge``: the
points' subprocesses then run on the cluster's machines; data and exp roots on a shared
filesystem, checked first). A point that fails is named with its error and the others go on.
A point whose ``results.json`` holds the scored set is skipped, so a rerun
resumes a killed sweep; ``force`` retrains and rescores every point instead.
The aggregate table (mean ± std over seeds) goes to
``exp/<c>/sweep/<base>/sweep_<set>.md`` with a PNG of WER vs each swept axis
(``wer_vs_m_<set>.png`` one line per layer, ``wer_vs_l_<set>.png`` one line per m, ...).

>>> parse_grid(["m=0.3,0.5", "layer=2"])
{'aux_smoothing': [0.3, 0.5], 'aux_layer': [2]}
>>> [p.name for p in expand_grid("aux_ls0.5_l3", {"aux_smoothing": [0.3, 0.5]}, [1])]
['sweep_aux_ls0.5_l3_m0.3_seed1', 'sweep_aux_ls0.5_l3_m0.5_seed1']
"""

from __future__ import annotations

import itertools
import logging
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from weakalign.pipeline.io import atomic_open, atomic_path, read_json, write_json
from weakalign.pipeline.workspace import Workspace

from .scoring import split_results

log = logging.getLogger("weakalign")

ALIASES = {"m": "aux_smoothing", "layer": "aux_layer", "aux_weight": "aux_weight", "w": "aux_weight"}
SHORT = {"aux_smoothing": "m", "aux_layer": "l", "aux_weight": "w"}


def _value(text: str):
    """YAML scalar: ``0.5`` -> 0.5, ``3`` -> 3, ``smoothed_ce`` -> str."""
    return yaml.safe_load(text)


def parse_grid(items: list[str]) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,...")
        key, values = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        vals = [_value(v) for v in values.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid {item!r}: no values")
        grid[key] = vals
    return grid


@dataclass
class SweepPoint:
    name: str
    overrides: dict
    seed: int | None

    @property
    def group(self) -> str:
        """The run name without its seed: the grid point."""
        return self.name.rsplit("_seed", 1)[0] if self.seed is not None else self.name


def expand_grid(base: str, grid: dict[str, list], seeds: list[int] | None) -> list[SweepPoint]:
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        tag = "_".join(f"{SHORT.get(k, k)}{v}" for k, v in overrides.items())
        for seed in (seeds or [None]):
            name = f"sweep_{base}_{tag}" + (f"_seed{seed}" if seed is not None else "")
            points.append(SweepPoint(name, overrides, seed))
    return points


def is_finished(run_dir: Path, split: str) -> bool:
    path = run_dir / "results.json"
    if not path.exists():
        return False
    try:
        return split in split_results(read_json(path))
    except ValueError:
        return False


@dataclass
class SweepSettings:
    base: str = "aux_ls0.5_l3"
    split: str = "test"
    decode: str = "beam"
    device: str = "cpu"
    threads: int = 1
    train_args: list[str] = field(default_factory=list)   # e.g. ["--epochs", "3"]
    fixed: dict = field(default_factory=dict)              # config overrides shared by every point
    force: bool = False                                    # redo finished points too


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from weakalign.pipeline.cli import cli; cli()", *args]


def point_commands(ws: Workspace, point: SweepPoint, settings: SweepSettings) -> list[list[str]]:
    """The ``weakalign train`` and ``weakalign score`` command lines of one point."""
    roots = ["--data-root", str(ws.data_root), "--exp-root", str(ws.exp_root), "--nj", str(settings.threads)]
    roots += ["--force"] if settings.force else []
    sets = [a for k, v in {**settings.fixed, **point.overrides}.items() for a in ("--set", f"{k}={v}")]
    seed = ["--seed", str(point.seed)] if point.seed is not None else []
    return [
        _cli("train", ws.corpus, *roots, "--config", settings.base, *seed, *sets, "--run", point.name,
             "--device", settings.device, *settings.train_args),
        _cli("score", ws.corpus, *roots, "--run", point.name, "--decode", settings.decode, "--device", settings.device),
    ]


def subprocess_runner(ws: Workspace, point: SweepPoint, settings: SweepSettings, log_path: Path) -> None:
    """Train then score one point with the real commands, each a subprocess, output to ``log_path``."""
    commands = point_commands(ws, point, settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as out:
        for cmd in commands:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"sweep point {point.name}: {cmd[3]} failed (exit {done.returncode}); see {log_path}")


Runner = Callable[[Workspace, SweepPoint, SweepSettings, Path], None]


def sweep_dir(ws: Workspace, base: str) -> Path:
    return ws.exp / "sweep" / base


def run_sweep(ws: Workspace, grid: dict[str, list], seeds: list[int] | None, settings: SweepSettings,
              jobs: int = 1, runner: Runner = subprocess_runner, cluster: str | None = None) -> dict:
    """Run every unfinished point (``jobs`` at a time, on ``cluster``; see the module docstring);
    a failed point is named, the others go on. ``runner`` must pickle (a module-level function)
    when the points run on Dask workers."""
    points = expand_grid(settings.base, grid, seeds)
    out_dir = sweep_dir(ws, settings.base)
    write_json(out_dir / "grid.json", {"base": settings.base, "grid": grid, "seeds": seeds,
                                       "points": [p.__dict__ for p in points]})
    todo = [p for p in points if settings.force or not is_finished(ws.exp / "e2e" / p.name, settings.split)]
    jobs = max(1, jobs)
    log.info("sweep %s: %d point(s), %d finished, %d to run, %d at a time", settings.base, len(points),
             len(points) - len(todo), len(todo), jobs)
    failed: dict[str, str] = {}
    if todo:
        from weakalign.kaldi_steps.execution import Executor

        with Executor(jobs, cluster, shared=(ws.data, ws.exp)) as executor:
            args = [(ws, point, settings, out_dir / "log" / f"{point.name}.log") for point in todo]
            for j, _, error in executor.outcomes(runner, args, "sweep point", at_once=jobs):
                if error is None:
                    log.info("sweep: %s done", todo[j].name)
                else:  # the other points go on
                    failed[todo[j].name] = str(error)
                    log.error("sweep: %s failed: %s", todo[j].name, error)
    rows = aggregate(ws, points, settings.split)
    table = format_sweep_table(rows, settings.split)
    with atomic_open(out_dir / f"sweep_{settings.split}.md", "w") as f:
        f.write(f"# sweep of {settings.base} on {ws.corpus} ({settings.split})\n\n{table}\n")
    pngs = [plot_wer_vs(rows, key, out_dir / f"wer_vs_{SHORT.get(key, key)}_{settings.split}.png", settings.split)
            for key in grid if len(grid[key]) > 1]
    return {"points": len(points), "ran": len(todo), "failed": failed, "rows": rows, "table": table,
            "pngs": [str(p) for p in pngs if p]}


def aggregate(ws: Workspace, points: list[SweepPoint], split: str) -> list[dict]:
    """One row per grid point: its overrides and WER mean ± std over the seeds that finished."""
    groups: dict[str, list[SweepPoint]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    rows = []
    for group, members in groups.items():
        wers, missing = [], []
        for p in members:
            run_dir = ws.exp / "e2e" / p.name
            if is_finished(run_dir, split) and read_json(run_dir / "results.json")[split].get("wer") is not None:
                wers.append(float(read_json(run_dir / "results.json")[split]["wer"]))
            else:
                missing.append(p.name)
        rows.append({"point": group, **members[0].overrides, "seeds": len(wers), "missing": missing,
                     "wer": round(statistics.mean(wers), 2) if wers else None,
                     "wer_std": round(statistics.stdev(wers), 2) if len(wers) > 1 else None})
    return rows


def format_sweep_table(rows: list[dict], split: str) -> str:
    keys = [k for k in rows[0] if k not in ("point", "seeds", "missing", "wer", "wer_std")] if rows else []
    lines = ["| " + " | ".join(keys + [f"{split} WER (%)", "seeds"]) + " |", "|---" * (len(keys) + 2) + "|"]
    for r in rows:
        wer = "—" if r["wer"] is None else f"{r['wer']:.2f}" + (f" ± {r['wer_std']:.2f}" if r["wer_std"] is not None else "")
        lines.append("| " + " | ".join([str(r[k]) for k in keys] + [wer, str(r["seeds"])]) + " |")
    return "\n".join(lines)


AXIS_LABELS = {"aux_smoothing": "label smoothing m", "aux_layer": "encoder layer of the aux loss",
               "aux_weight": "aux loss weight"}


def plot_wer_vs(rows: list[dict], key: str, path: Path, split: str) -> Path | None:
    """WER (mean ± std over seeds) vs the swept axis ``key``, one line per value of the other axes;
    None when ``key`` has no numeric finished point (e.g. ``wer_vs_m``: one line per layer)."""
    pts = [r for r in rows if isinstance(r.get(key), (int, float)) and r["wer"] is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    series: dict[str, list[dict]] = {}
    for r in pts:
        others = [k for k in r if k not in (key, "point", "seeds", "missing", "wer", "wer_std")]
        label = ", ".join(f"{SHORT.get(k, k)} {r[k]}" for k in others) or "all"
        series.setdefault(label, []).append(r)
    for label, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r[key])
        ax.errorbar([r[key] for r in rs], [r["wer"] for r in rs], yerr=[r["wer_std"] or 0.0 for r in rs],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel(AXIS_LABELS.get(key, key))
    ax.set_ylabel(f"{split} WER (%, mean ± std over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
