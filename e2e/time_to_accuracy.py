"""Time to accuracy: when a training run FIRST reaches a dev WER target, in wall time and in updates.

From a run's ``metrics.jsonl`` (one row per epoch): for each target WER (%), the end of the
first epoch whose dev greedy-CTC WER (``dev.wer``) is <= the target -- its ``epoch``, the
cumulative optimizer ``updates`` there, and the wall time up to it (the running sum of the
epochs' ``time_s``, validation included); ``None`` when no epoch reaches it. Rows without a
dev WER still add their time.

Runs are grouped by config (the run name without ``_seed<n>``). A group's figure for a
target is the mean over the runs that reached it, with ``reached`` of ``n`` runs (a mean
over fewer than all seeds is optimistic: the others had not reached it when they stopped).
Each other group's mean updates (and wall time) are divided by the ``baseline`` group's
for every target both reached: below 1, the system got there in fewer updates.

The wall times are those the runs measured, on the machine and with the threads
(``threads`` of ``training.json``) that trained them -- not the bench machine's.

>>> rows = [{"epoch": 1, "dev": {"wer": 80.0}, "updates": 100, "time_s": 60.0},
...         {"epoch": 2, "dev": {"wer": 25.0}, "updates": 200, "time_s": 61.5},
...         {"epoch": 3, "dev": {"wer": 18.0}, "updates": 300, "time_s": 59.0}]
>>> crossings = first_crossings(rows, targets=(50, 20, 10))
>>> crossings["50"]
{'epoch': 2, 'updates': 200, 'time_s': 121.5}
>>> crossings["20"]
{'epoch': 3, 'updates': 300, 'time_s': 180.5}
>>> crossings["10"] is None
True
"""

from __future__ import annotations

import fnmatch
import statistics
from pathlib import Path

from .compare import run_seed, runs_root, seed_group_name, training_record
from .metrics import METRICS_FILE, read_metrics

DEFAULT_TARGETS = (50.0, 30.0, 20.0, 15.0, 12.0, 10.0)
BASELINE = "baseline"
CURVES_FILE = "curves_dev.png"


def target_key(target: float) -> str:
    """The JSON key of a target: ``20`` -> ``"20"``, ``12.5`` -> ``"12.5"``."""
    return f"{float(target):g}"


def dev_wer(row: dict) -> float | None:
    return (row.get("dev") or {}).get("wer")


def first_crossings(rows: list[dict], targets=DEFAULT_TARGETS) -> dict[str, dict | None]:
    """``{target: {"epoch", "updates", "time_s"} | None}``: the first epoch with dev WER <= target."""
    out: dict[str, dict | None] = {target_key(t): None for t in targets}
    elapsed = 0.0
    for row in rows:
        elapsed += float(row.get("time_s") or 0.0)
        wer = dev_wer(row)
        if wer is None:
            continue
        for t in targets:
            key = target_key(t)
            if out[key] is None and wer <= t:
                out[key] = {"epoch": row.get("epoch"), "updates": row.get("updates"), "time_s": round(elapsed, 2)}
    return out


def summarize_run(name: str, rows: list[dict], record: dict | None = None, targets=DEFAULT_TARGETS,
                  seed: int | None = None) -> dict:
    """One run: its crossings plus what it ran with (``record`` is its training.json, if any)."""
    record = record or {}
    wers = [w for w in map(dev_wer, rows) if w is not None]
    last = rows[-1] if rows else {}
    return {
        "run": name, "group": seed_group_name(name), "seed": seed if seed is not None else record.get("seed"),
        "threads": record.get("threads"),
        "epochs_run": record.get("epochs_run", last.get("epoch")),
        "updates": record.get("updates", last.get("updates")),
        "time_s": round(sum(float(r.get("time_s") or 0.0) for r in rows), 2),
        "finished": bool(record),            # training.json is written when training ends
        "best_dev_wer": min(wers) if wers else None,
        "targets": first_crossings(rows, targets),
    }


def _mean(values: list) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def summarize_groups(runs: list[dict], targets=DEFAULT_TARGETS, baseline: str = BASELINE) -> dict:
    """``{"groups": {group: ...}, "ratio_to_baseline": {group: {target: ...}}}`` over :func:`summarize_run` rows.

    >>> runs = [{"run": f"{g}_seed{s}", "group": g, "seed": s, "threads": 2, "epochs_run": 10,
    ...          "targets": {"20": {"epoch": 5, "updates": u, "time_s": 10.0 * u}}}
    ...         for g, s, u in (("baseline", 1, 400), ("baseline", 2, 600), ("aux", 1, 300))]
    >>> out = summarize_groups(runs, targets=(20,))
    >>> out["groups"]["baseline"]["targets"]["20"]["updates_mean"]
    500.0
    >>> out["ratio_to_baseline"]["aux"]["20"]["updates_ratio"]
    0.6
    """
    by_group: dict[str, list[dict]] = {}
    for r in runs:
        by_group.setdefault(r["group"], []).append(r)
    order = sorted(by_group, key=lambda g: (g != baseline, g))
    groups = {}
    for g in order:
        members = sorted(by_group[g], key=lambda r: (r.get("seed") is None, r.get("seed") or 0, r["run"]))
        per_target = {}
        for t in targets:
            key = target_key(t)
            hits = [r["targets"].get(key) for r in members]
            reached = [h for h in hits if h is not None]
            per_target[key] = {
                "reached": len(reached), "n": len(members),
                "updates_mean": _mean([h["updates"] for h in reached if h.get("updates") is not None]),
                "time_s_mean": _mean([h["time_s"] for h in reached]),
                "updates": [h["updates"] if h else None for h in hits],
                "time_s": [h["time_s"] if h else None for h in hits],
            }
        groups[g] = {
            "runs": [r["run"] for r in members], "n": len(members), "seeds": [r.get("seed") for r in members],
            "threads": sorted({r["threads"] for r in members if r.get("threads") is not None}),
            "epochs_run": [r.get("epochs_run") for r in members],
            "epochs_run_mean": _mean([r["epochs_run"] for r in members if r.get("epochs_run") is not None]),
            "targets": per_target,
        }
    ratios = {}
    base = groups.get(baseline)
    for g, entry in groups.items():
        if base is None or g == baseline:
            continue
        ratios[g] = {}
        for key, mine in entry["targets"].items():
            theirs = base["targets"][key]
            if mine["updates_mean"] is None or not theirs["updates_mean"]:
                continue
            ratios[g][key] = {
                "updates_ratio": round(mine["updates_mean"] / theirs["updates_mean"], 3),
                "time_ratio": (round(mine["time_s_mean"] / theirs["time_s_mean"], 3)
                               if mine["time_s_mean"] and theirs["time_s_mean"] else None),
                "reached": f"{mine['reached']}/{mine['n']}",
                "baseline_reached": f"{theirs['reached']}/{theirs['n']}",
            }
    return {"groups": groups, "ratio_to_baseline": ratios}


# ---------------------------------------------------------------- I/O

def find_run_dirs(roots) -> list[tuple[Path, str]]:
    """``(run_dir, root label)`` of every dir with a metrics.jsonl under the existing ``roots``.

    A run name found under several roots (a published copy of an exp/ run) counts once: the first root's.
    """
    seen, out = set(), []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for d in sorted(p for p in root.iterdir() if p.is_dir() and (p / METRICS_FILE).is_file()):
            if d.name not in seen:
                seen.add(d.name)
                out.append((d, str(root)))
    return out


def time_to_accuracy(roots, targets=DEFAULT_TARGETS, baseline: str = BASELINE) -> dict:
    """The time-to-accuracy result of every run under ``roots`` (run roots such as ``exp/an4/e2e``)."""
    targets = tuple(float(t) for t in targets)
    runs = []
    for run_dir, root in find_run_dirs(roots):
        record = training_record(run_dir)
        summary = summarize_run(run_dir.name, read_metrics(run_dir), record, targets,
                                seed=run_seed(run_dir, record))
        runs.append({**summary, "source": root})
    result = {
        "what": "wall time (sum of the epochs' time_s, validation included, as measured by the run) and "
                "optimizer updates at the end of the first epoch with dev greedy-CTC WER <= each target; "
                "group figures are means over the seeds that reached the target",
        "metric": "dev.wer (greedy CTC, %)", "targets": [target_key(t) for t in targets], "baseline": baseline,
        "roots": [str(r) for r in roots], "runs": runs, **summarize_groups(runs, targets, baseline),
    }
    if not runs:
        result["note"] = "no run dir with metrics.jsonl under " + ", ".join(str(r) for r in roots)
    return result


def bench_time_to_accuracy(ws, nj: int, results_root: str | Path | None = None) -> dict:
    """Bench entry (``exp/bench/time_to_accuracy.json``): the runs of ``exp/<c>/e2e/`` (and ``results/<c>/``)."""
    roots = [runs_root(ws.corpus, exp_root=ws.exp_root)]
    if results_root is not None:
        roots.append(runs_root(ws.corpus, results_root=results_root, from_results=True))
    return time_to_accuracy(roots)


BENCHMARKS = [("time_to_accuracy", bench_time_to_accuracy)]


# ---------------------------------------------------------------- table

def _cell(entry: dict) -> str:
    if entry["updates_mean"] is None and entry["time_s_mean"] is None:
        return "—"
    updates = f"{entry['updates_mean']:.0f}" if entry["updates_mean"] is not None else "?"
    cell = f"{updates} / {entry['time_s_mean'] / 60:.1f} min"
    return cell + (f" ({entry['reached']}/{entry['n']})" if entry["reached"] < entry["n"] else "")


def _span(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def format_markdown(result: dict, per_run: bool = False) -> str:
    """Markdown: updates / wall minutes to each target per system, the ratio to the baseline, optionally per run."""
    targets = result["targets"]
    if not result["runs"]:
        return f"_{result.get('note', 'no runs')}_"
    head = "| system | n | threads | epochs | " + " | ".join(f"WER ≤ {t}%" for t in targets) + " |"
    rule = "|---|---:|---:|---:|" + "---:|" * len(targets)
    lines = ["Time to accuracy on the dev greedy-CTC WER: updates / wall time at the end of the first epoch "
             "reaching each target, mean over the seeds that reached it ((k/n) when not all did; — none did).",
             "", head, rule]
    for g, entry in result["groups"].items():
        cells = [_cell(entry["targets"][t]) for t in targets]
        lines.append(f"| {g} | {entry['n']} | {_span(entry['threads'])} | {_span(entry['epochs_run'])} | "
                     + " | ".join(cells) + " |")
    if result["ratio_to_baseline"]:
        lines += ["", f"Mean updates relative to `{result['baseline']}` (< 1: fewer updates; wall-time ratio in "
                  "brackets), where both reached the target:", "",
                  "| system | " + " | ".join(f"WER ≤ {t}%" for t in targets) + " |", "|---|" + "---:|" * len(targets)]
        for g, by_target in result["ratio_to_baseline"].items():
            cells = []
            for t in targets:
                r = by_target.get(t)
                cells.append("—" if r is None else f"{r['updates_ratio']:.2f}"
                             + (f" [{r['time_ratio']:.2f}]" if r["time_ratio"] is not None else ""))
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
    elif result["baseline"] not in result["groups"]:
        lines += ["", f"(no `{result['baseline']}` group: no ratios)"]
    if per_run:
        lines += ["", "| run | threads | epochs | best dev WER | " + " | ".join(f"≤ {t}%" for t in targets) + " |",
                  "|---|---:|---:|---:|" + "---:|" * len(targets)]
        for r in result["runs"]:
            cells = ["—" if r["targets"][t] is None else f"{r['targets'][t]['updates']} / "
                     f"{r['targets'][t]['time_s'] / 60:.1f} min (ep {r['targets'][t]['epoch']})" for t in targets]
            lines.append(f"| {r['run']} | {r['threads'] if r['threads'] is not None else '?'} | "
                         f"{r['epochs_run'] if r['epochs_run'] is not None else '?'} | "
                         f"{r['best_dev_wer'] if r['best_dev_wer'] is not None else '?'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- learning curves across seeds

def resolve_run_groups(root: Path, specs: list[str]) -> dict[str, list[Path]]:
    """``{system: [run dirs]}``: the run dirs (with a metrics.jsonl) ``specs`` name or glob under ``root``,
    grouped by config (name without ``_seed<n>``), systems in the order first named.

    A spec may also be a path to a run dir.
    """
    available = [d for d, _ in find_run_dirs([root])]
    systems: dict[str, list[Path]] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and (path / METRICS_FILE).is_file():
            matches = [path]
        else:
            matches = [d for d in available if fnmatch.fnmatchcase(d.name, spec)]
        if not matches:
            raise FileNotFoundError(f"no run with {METRICS_FILE} matches {spec!r} under {root} "
                                    f"(runs: {', '.join(d.name for d in available) or 'none'})")
        for d in matches:
            members = systems.setdefault(seed_group_name(d.name), [])
            if d not in members:
                members.append(d)
    return systems


def curves(corpus: str, specs: list[str], *, exp_root: str | Path = "exp", results_root: str | Path = "results",
           from_results: bool = False, out: str | Path | None = None) -> Path:
    """Draw dev greedy-CTC WER and dev CTC loss vs updates of the named runs, one line per seed; returns the PNG."""
    from .plots import plot_dev_curves

    root = runs_root(corpus, exp_root=exp_root, results_root=results_root, from_results=from_results)
    systems = resolve_run_groups(root, list(specs))
    runs = {name: [(d.name, read_metrics(d)) for d in dirs] for name, dirs in systems.items()}
    out = Path(out) if out else root / CURVES_FILE
    plot_dev_curves(runs, out, title=f"{corpus}: dev learning curves")
    return out
