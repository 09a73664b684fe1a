"""Loss curves of a run: one panel per loss term, train and dev per epoch; and dev learning
curves of several systems across seeds (:func:`plot_dev_curves`, ``weakalign curves``).

>>> import tempfile, os
>>> rows = [{"epoch": e, "train": {"loss": 3.0 / e, "loss_ctc": 2.0 / e}, "dev": {"loss": 3.5 / e, "loss_ctc": 2.5 / e}}
...         for e in (1, 2, 3)]
>>> path = os.path.join(tempfile.mkdtemp(), "loss_curves.png")
>>> plot_loss_curves(rows, path)
>>> os.path.getsize(path) > 0
True
"""

from __future__ import annotations

from pathlib import Path

from ..pipeline.io import atomic_path

TERMS = ("loss", "loss_att", "loss_ctc", "loss_aux")


def plot_loss_curves(metrics: list[dict], path: str | Path, title: str = "") -> None:
    # The object API, not pyplot: no global figure state, no backend switch, no gc pass on close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    terms = [t for t in TERMS if any(row.get(split, {}).get(t) is not None
                                     for row in metrics for split in ("train", "dev"))]
    fig = Figure(figsize=(4 * max(len(terms), 1), 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(terms), 1), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for split, style in (("train", "-o"), ("dev", "-s")):
            pts = [(row["epoch"], row[split][term]) for row in metrics
                   if row.get(split, {}).get(term) is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=split, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


#: (metric key of the dev row, panel title) of :func:`plot_dev_curves`.
DEV_CURVES = (("wer", "dev WER, greedy CTC (%)"), ("loss_ctc", "dev CTC loss"))


def plot_dev_curves(systems: dict[str, list[tuple[str, list[dict]]]], path: str | Path, title: str = "") -> None:
    """Dev greedy-CTC WER and dev CTC loss vs updates: ``systems`` maps a system to its ``(run, metrics rows)``
    (one per seed); one thin line per seed, the system's colour shared by its seeds, one legend entry per system.

    Rows without ``updates`` or without the dev value are left out of that line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(DEV_CURVES), squeeze=False)[0]
    colours = [f"C{i % 10}" for i in range(len(systems))]
    for colour, (system, runs) in zip(colours, systems.items()):
        for ax, (key, _) in zip(axes, DEV_CURVES):
            labelled = False
            for _run, rows in runs:
                pts = [(row["updates"], row["dev"][key]) for row in rows
                       if row.get("updates") is not None and (row.get("dev") or {}).get(key) is not None]
                if not pts:
                    continue
                ax.plot(*zip(*pts), "-", color=colour, linewidth=0.9, alpha=0.8,
                        label=None if labelled else f"{system} (n={len(runs)})")
                labelled = True
    for ax, (_, name) in zip(axes, DEV_CURVES):
        ax.set_title(name)
        ax.set_xlabel("updates")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
