"""Loss curves of a run: one panel per loss term, train and dev per epoch.

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
