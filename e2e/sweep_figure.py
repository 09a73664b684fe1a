"""A sweep's figure from published runs: dev and test WER (mean ± std over seeds) vs one axis.

``weakalign sweep`` plots the points it trained itself, from ``exp/``. The paper's figures
(WER vs the smoothing m at layer 3, WER vs the layer at m=0.5) are built from runs that several
sessions trained and published, some under other names (m=0 at weight 1.0 *is* one-hot CE at
weight 1.0: the same loss), so a figure is declared in ``results/<c>/tables.yaml`` beside the
tables, and ``make results`` draws it from ``results/`` alone::

    - figure: wer_vs_m                      # results/<c>/wer_vs_m.png, and its RESULTS.md section
      title: "WER vs label smoothing m (smoothed senone CE at layer 3, weight 1.0)"
      axis: m
      points:
        0.0: [paper_sweep_aux_onehot_l3_w1.0*]       # names or globs of published runs
        0.5: [paper_aux_ls0.5_l3, paper_aux_ls0.5_l3_seed*]
      reference: paper_baseline*                      # optional: a horizontal band (mean ± std)

Every run of a figure must have trained under the same conditions (alignment set, stopping rule,
selection criterion: :func:`~weakalign.e2e.compare.check_comparable`), as in a table.

>>> spec = FigureSpec.from_entry({"figure": "wer_vs_m", "axis": "m", "points": {0.5: "a_seed*", 0: ["b"]}})
>>> spec.points
{0.0: ['b'], 0.5: ['a_seed*']}
>>> mean_std([7.0, 9.0]), mean_std([8.0])
((8.0, 1.4142135623730951), (8.0, None))
"""

from __future__ import annotations

import os
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path

from weakalign.pipeline.io import atomic_path, read_json

from .compare import System, check_comparable, expand_run_specs, scored_splits, section_marker, tables_yaml_entries
from .scoring import split_results


@dataclass
class FigureSpec:
    figure: str                       # file stem of the PNG and the name of the RESULTS.md section
    axis: str                         # the swept config key, the x label
    points: dict[float, list[str]]    # x -> published run names or globs (its seeds)
    title: str = ""
    reference: list[str] | None = None   # e.g. the no-aux baseline: drawn as a band

    @classmethod
    def from_entry(cls, entry: dict) -> "FigureSpec":
        if not entry.get("axis") or not isinstance(entry.get("points"), dict) or not entry["points"]:
            raise ValueError(f"figure {entry.get('figure')!r} needs 'axis' and a non-empty 'points' mapping")
        as_list = lambda v: [str(r) for r in (v if isinstance(v, list) else [v])]   # noqa: E731
        points = {float(x): as_list(runs) for x, runs in sorted(entry["points"].items(), key=lambda kv: float(kv[0]))}
        reference = as_list(entry["reference"]) if entry.get("reference") else None
        return cls(str(entry["figure"]), str(entry["axis"]), points, str(entry.get("title", "")), reference)

    @property
    def section(self) -> str:
        return self.title or self.figure


def read_figure_specs(root: Path) -> list[FigureSpec]:
    """The ``figure`` entries of ``root/tables.yaml``."""
    return [FigureSpec.from_entry(e) for e in tables_yaml_entries(root) if "figure" in e]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for a single value: one seed has no spread)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def figure_systems(root: Path, spec: FigureSpec) -> tuple[dict[float, System], System | None]:
    """The published runs of each point (and of the reference) as systems."""
    where = f"figure {spec.figure!r}"
    points = {x: System(f"{spec.axis}={x:g}", [root / n for n in expand_run_specs(root, runs, where)])
              for x, runs in spec.points.items()}
    reference = System("no aux loss", [root / n for n in expand_run_specs(root, spec.reference, where)]) \
        if spec.reference else None
    return points, reference


def system_wers(system: System, splits: tuple[str, ...]) -> dict[str, list[float]]:
    """Each split's WER of every run of ``system`` (runs without that split left out)."""
    results = [split_results(read_json(d / "results.json")) for d in system.run_dirs]
    return {split: [r[split]["wer"] for r in results if r.get(split, {}).get("wer") is not None] for split in splits}


def figure_rows(points: dict[float, System], splits: tuple[str, ...]) -> list[dict]:
    """One row per point: x, its runs, and per split the WERs with mean and std."""
    rows = []
    for x, system in points.items():
        wers = system_wers(system, splits)
        rows.append({"x": x, "runs": [d.name for d in system.run_dirs],
                     **{split: {"wers": w, **dict(zip(("mean", "std"), mean_std(w)))} if w else None
                        for split, w in wers.items()}})
    return rows


def plot_sweep_figure(rows: list[dict], splits: tuple[str, ...], path: str | Path, axis: str, title: str = "",
                      reference: dict | None = None) -> None:
    """One panel per split: WER vs ``axis`` with ±1 std error bars, every seed as a dot, n beside
    each point; the reference (mean ± std) as a dashed line and band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(splits), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        pts = [(r["x"], r[split]) for r in rows if r.get(split)]
        if pts:
            xs = [x for x, _ in pts]
            ax.errorbar(xs, [p["mean"] for _, p in pts], yerr=[p["std"] or 0.0 for _, p in pts], fmt="-o",
                        capsize=4, color="C0", label="mean ± std over seeds")
            for x, p in pts:
                ax.plot([x] * len(p["wers"]), p["wers"], ".", color="C0", alpha=0.5)
                ax.annotate(f"n={len(p['wers'])}", (x, p["mean"]), textcoords="offset points", xytext=(5, 5),
                            fontsize=7)
            ax.set_xticks(xs)
        if reference and reference.get(split):
            ref = reference[split]
            ax.axhline(ref["mean"], color="C3", linestyle="--", label=f"no aux loss (n={len(ref['wers'])})")
            if ref["std"]:
                ax.axhspan(ref["mean"] - ref["std"], ref["mean"] + ref["std"], color="C3", alpha=0.12)
        ax.set_title(f"{split} WER (%)")
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        # ~12 characters of 9-point text per inch: a one-panel figure wraps a long title instead of cutting it.
        fig.suptitle(textwrap.fill(title, width=int(12 * fig.get_figwidth()), break_on_hyphens=False), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _cell(entry: dict | None) -> str:
    if not entry:
        return "—"
    return f"{entry['mean']:.2f}" + (f" ± {entry['std']:.2f}" if entry["std"] is not None else "")


def figure_markdown(spec: FigureSpec, rows: list[dict], splits: tuple[str, ...], png: str,
                    reference: dict | None, warnings: list[str]) -> str:
    """The figure's RESULTS.md section body: the PNG, and the numbers it draws as a table."""
    header = [spec.axis, "n", *[f"{s} WER (%)" for s in splits], "runs"]
    lines = [f"## {spec.section}", "", f"![{spec.figure}]({png})", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows + ([{**reference, "x": "no aux loss"}] if reference else []):
        n = max((len(r[s]["wers"]) for s in splits if r.get(s)), default=0)
        x = r["x"] if isinstance(r["x"], str) else f"{r['x']:g}"
        lines.append("| " + " | ".join([x, str(n), *[_cell(r.get(s)) for s in splits], ", ".join(r["runs"])]) + " |")
    lines += ["", "Mean ± std over the seeds of each point (error bars: ±1 std; dots: single runs). "
              "Choose a point on dev; test reports it."]
    if warnings:
        lines += ["", *[f"> **warning**: {w}" for w in warnings]]
    return "\n".join(lines)


def build_figure(root: Path, spec: FigureSpec, out_md: Path, splits: tuple[str, ...] = ("dev", "test"),
                 allow_mixed: bool = False) -> str:
    """Draw ``root/<figure>.png`` from the published runs and return its RESULTS.md section
    (markers included); refuses runs trained under different conditions unless ``allow_mixed``.
    A split no run has scored (speechocean762's test before its test half is added) gets no panel."""
    points, reference = figure_systems(root, spec)
    systems = list(points.values()) + ([reference] if reference else [])
    warnings = check_comparable(systems, allow_mixed)
    splits = scored_splits(systems, splits)
    rows = figure_rows(points, splits)
    ref_row = figure_rows({0.0: reference}, splits)[0] if reference else None
    png = root / f"{spec.figure}.png"
    plot_sweep_figure(rows, splits, png, spec.axis, spec.title, ref_row)
    rel = os.path.relpath(png.resolve(), Path(out_md).resolve().parent)
    return "\n".join([section_marker(spec.section, False),
                      figure_markdown(spec, rows, splits, rel, ref_row, warnings), section_marker(spec.section, True)])
