"""Figures of an EM-Network run: teacher vs student losses (the paper's Fig. 2) and
frame-wise CTC posteriors of one dev utterance (its Fig. 3).

- :func:`plot_teacher_student_curves`: CTC loss of teacher and student per epoch
  (train and dev), the attention losses when present, and their greedy-CTC dev WER.
- :func:`plot_ctc_posteriors`: one panel per model, each non-blank token's posterior
  per frame (blank dashed), peaks labelled with their BPE piece.
- both PNGs for a run dir: :func:`weakalign.e2e.emnet_figures.emnet_plot`
  (``weakalign emnet-plot CORPUS RUN --ref-run ctc_only``).

>>> import tempfile, os
>>> rows = [{"epoch": e, "train": {"loss_ctc_student": 3.0 / e, "loss_ctc_teacher": 2.0 / e},
...          "dev": {"loss_ctc_student": 3.5 / e, "loss_ctc_teacher": 2.5 / e, "wer_student": 90 / e,
...                  "wer_teacher": 50 / e}} for e in (1, 2, 3)]
>>> path = os.path.join(tempfile.mkdtemp(), "emnet_curves.png")
>>> plot_teacher_student_curves(rows, path)
>>> os.path.getsize(path) > 0
True
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..pipeline.io import atomic_path

log = logging.getLogger("weakalign")

#: (panel title, [(metrics key, legend label)]) of the teacher/student figure.
CURVE_PANELS = (
    ("CTC loss", [("loss_ctc_student", "student"), ("loss_ctc_teacher", "teacher")]),
    ("attention loss", [("loss_att_student", "student"), ("loss_att_teacher", "teacher")]),
    ("distillation loss", [("loss_kd_ctc", "KD (CTC)"), ("loss_kd_att", "KD (attention)")]),
)


def _figure(width: float, height: float):
    # The object API, not pyplot: no global figure state, no backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def plot_teacher_student_curves(metrics: list[dict], path: str | Path, title: str = "") -> None:
    """Teacher vs student per epoch from ``metrics.jsonl`` rows (train solid, dev dashed)."""
    def has(key):
        return any((row.get(split) or {}).get(key) is not None for row in metrics for split in ("train", "dev"))

    panels = [(name, [(k, lab) for k, lab in keys if has(k)]) for name, keys in CURVE_PANELS]
    panels = [(name, keys) for name, keys in panels if keys]
    if has("wer_teacher"):
        panels.append(("dev greedy-CTC WER (%)", [("wer_student", "student"), ("wer_teacher", "teacher")]))
    fig = _figure(4.2 * max(len(panels), 1), 3.4)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    colours = {"student": "tab:blue", "teacher": "tab:red", "KD (CTC)": "tab:green", "KD (attention)": "tab:olive"}
    for ax, (name, keys) in zip(axes, panels):
        splits = ("dev",) if name.startswith("dev") else ("train", "dev")
        for key, label in keys:
            for split in splits:
                pts = [(row["epoch"], row[split][key]) for row in metrics
                       if (row.get(split) or {}).get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), "-" if split == "train" else "--", marker="o", markersize=3,
                            color=colours.get(label), label=f"{label} ({split})")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if "loss" in name and _spread(ax) > 5:   # the first epoch's train loss would flatten the rest
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(f"{title}: EM-Network teacher vs student")
    _save(fig, path)


def _spread(ax) -> float:
    ys = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.ones(1)]).astype(float)
    ys = ys[ys > 0]
    return float(ys.max() / ys.min()) if ys.size else 1.0


def plot_ctc_posteriors(panels: list[tuple[str, np.ndarray]], path: str | Path, pieces: list[str],
                        title: str = "", blank: int = 0, min_peak: float = 0.3, per_panel: int = 3) -> None:
    """One row per ``(name, posteriors (T, V))``: blank dashed grey; as lines, every non-blank token
    that peaks above ``min_peak`` in any panel plus each panel's ``per_panel`` highest-peaking
    non-blank tokens (so a blurred, untrained model shows where its mass goes), labelled at their peaks.
    """
    shown = set()
    for _, post in panels:
        peak = post.max(0).copy()
        peak[blank] = -1.0
        shown |= {int(v) for v in np.nonzero(peak >= min_peak)[0]}
        shown |= {int(v) for v in np.argsort(-peak)[:per_panel]}
    shown = sorted(shown)
    cmap = _colours(len(shown))
    fig = _figure(10, 2.4 * len(panels) + 0.4)
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (name, post) in zip(axes, panels):
        frames = np.arange(post.shape[0])
        ax.plot(frames, post[:, blank], "--", color="0.6", linewidth=1, label="blank")
        for colour, v in zip(cmap, shown):
            ax.plot(frames, post[:, v], color=colour, linewidth=1.2)
            top = float(post[:, v].max())
            for t in _peaks(post[:, v], max(0.05, min(min_peak, top))):
                ax.annotate(pieces[v] if v < len(pieces) else str(v), (t, post[t, v]), fontsize=7,
                            ha="center", va="bottom", color=colour)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("posterior")
        ax.set_title(name, fontsize=9, loc="left")
        ax.grid(alpha=0.2)
    axes[-1].set_xlabel("encoder frame (40 ms)")
    axes[0].legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def _peaks(curve: np.ndarray, min_peak: float) -> list[int]:
    """Frames where ``curve`` has a local maximum of at least ``min_peak``."""
    out = []
    for t in range(len(curve)):
        left = curve[t - 1] if t > 0 else -1.0
        right = curve[t + 1] if t + 1 < len(curve) else -1.0
        if curve[t] >= min_peak and curve[t] >= left and curve[t] > right:
            out.append(t)
    return out


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]
