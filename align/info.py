"""``weakalign ali-info``: what an alignment dir holds, as figures and one picture.

For the utterances of one split that have an alignment:

- counts: utterances (aligned / missing), frames, hours;
- senone inventory: senones of the model vs. used, the ``top_k`` most frequent with their frame
  shares, and the *majority-senone rate* (share of frames carrying the most frequent senone —
  the frame accuracy of always guessing it, the floor for an auxiliary senone classifier);
- per-phone durations (position-independent phones, Kaldi ``SplitToPhones`` instances):
  count, mean / median / min / max in ms;
- the share of senone segments (runs of one senone) and of phone segments that **vanish** at
  the encoder's 40 ms rate: no frame of the run is a subsampling window's centre, so
  :func:`weakalign.align.loader.subsample_labels` never shows it to the E2E model;
- a PNG of one utterance: its fbank spectrogram with the senone and phone strips underneath.

Writes ``exp/<c>/ali_info/<ali-dir-name>/<split>.json`` and ``<split>_<utt>.png``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..pipeline.io import atomic_path, write_json
from ..pipeline.workspace import Workspace
from .convert import FRAME_SHIFT, AlignmentModel
from .loader import subsample_labels

log = logging.getLogger("weakalign")


def run_ids(labels: np.ndarray) -> np.ndarray:
    """Index of the run (maximal block of equal labels) each frame belongs to.

    >>> run_ids(np.array([5, 5, 2, 2, 2, 5])).tolist()
    [0, 0, 1, 1, 1, 2]
    """
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(labels[1:] != labels[:-1])]).astype(np.int64)


def vanishing_segments(segment_ids: np.ndarray) -> tuple[int, int]:
    """``(vanished, total)`` segments of a per-frame segment-index array after subsampling to 40 ms.

    A segment vanishes when none of its frames is the centre of an encoder window, i.e. its index
    does not appear in :func:`~weakalign.align.loader.subsample_labels` of the array.

    >>> vanishing_segments(np.array([0] * 5 + [1] * 2 + [2] * 6))   # centres 3, 7: segment 1 is lost
    (1, 3)
    """
    total = int(segment_ids.max()) + 1 if len(segment_ids) else 0
    kept = np.unique(np.asarray(subsample_labels(segment_ids)))
    return total - len(kept), total


def alignment_stats(alignments: dict[str, np.ndarray], model: AlignmentModel, top_k: int = 10) -> dict:
    """The figures of the module docstring for ``alignments`` (utt → transition-ids)."""
    senone_counts = np.zeros(model.num_pdfs, dtype=np.int64)
    durations: dict[str, list[int]] = defaultdict(list)
    vanish = Counter()
    frames = 0
    for utt_id, ali in alignments.items():
        senones = model.senones(model.check(ali, utt_id))
        senone_counts += np.bincount(senones, minlength=model.num_pdfs)
        frames += len(ali)
        segs = model.segments(ali, utt_id)
        for seg in segs:
            durations[model.phone_name(seg.phone, position=False)].append(seg.num_frames)
        v, t = vanishing_segments(run_ids(senones))
        vanish["senone_vanished"] += v
        vanish["senone_segments"] += t
        phone_index = np.repeat(np.arange(len(segs)), [s.num_frames for s in segs])
        v, t = vanishing_segments(phone_index)
        vanish["phone_vanished"] += v
        vanish["phone_segments"] += t
    order = np.argsort(-senone_counts, kind="stable")
    ms = FRAME_SHIFT * 1000
    per_phone = {}
    for name in sorted(durations):
        d = np.array(durations[name])
        per_phone[name] = {"count": int(len(d)), "mean_ms": round(float(d.mean()) * ms, 1),
                           "median_ms": float(np.median(d)) * ms, "min_ms": int(d.min()) * ms,
                           "max_ms": int(d.max()) * ms}
    return {
        "utterances": len(alignments),
        "frames": int(frames),
        "hours": round(frames * FRAME_SHIFT / 3600, 3),
        "senones": {
            "in_model": model.num_pdfs,
            "used": int((senone_counts > 0).sum()),
            "majority_senone": int(order[0]) if frames else None,
            "majority_senone_rate": round(float(senone_counts[order[0]]) / frames, 4) if frames else None,
            "top": [{"senone": int(s), "frames": int(senone_counts[s]),
                     "share": round(float(senone_counts[s]) / max(frames, 1), 4)} for s in order[:top_k]],
        },
        "phone_durations": per_phone,
        "vanishing_at_40ms": {
            "senone_segments": vanish["senone_segments"],
            "senone_vanished": vanish["senone_vanished"],
            "senone_vanished_share": round(vanish["senone_vanished"] / max(vanish["senone_segments"], 1), 4),
            "phone_segments": vanish["phone_segments"],
            "phone_vanished": vanish["phone_vanished"],
            "phone_vanished_share": round(vanish["phone_vanished"] / max(vanish["phone_segments"], 1), 4),
        },
    }


def plot_utterance(path: str | os.PathLike, cut, ali: np.ndarray, model: AlignmentModel) -> None:
    """PNG: the cut's fbank spectrogram over its senone and phone strips (frames on the x axis)."""
    # A bare Figure (no pyplot): no GUI backend is touched, nothing to close.
    from matplotlib.figure import Figure

    feats = cut.load_features()
    n = min(len(feats), len(ali))
    senones = model.senones(ali)[:n]
    segs = [s for s in model.segments(ali, cut.id) if s.start < n]
    fig = Figure(figsize=(max(8, n / 40), 5.5))
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [4, 0.6, 0.6]})
    axes[0].imshow(feats[:n].T, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    axes[0].set_ylabel("fbank bin")
    axes[0].set_title(f"{cut.id}: {cut.supervisions[0].text}")
    axes[1].imshow((senones % 20)[None, :], aspect="auto", cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
    axes[1].set_yticks([0], ["senone"])
    run = run_ids(senones)
    width_px = fig.get_figwidth() * 100 * 0.85
    min_frames = max(4, int(np.ceil(18 * n / width_px)))  # label only runs wide enough to read
    for r in range(int(run[-1]) + 1 if n else 0):
        frames = np.flatnonzero(run == r)
        if len(frames) >= min_frames:
            axes[1].text(frames.mean(), 0, str(senones[frames[0]]), ha="center", va="center", fontsize=6)
    phone_strip = np.repeat(np.arange(len(segs)) % 2, [min(s.end, n) - s.start for s in segs])
    axes[2].imshow(phone_strip[None, :], aspect="auto", cmap="Greys", vmin=-1, vmax=3, interpolation="nearest")
    axes[2].set_yticks([0], ["phone"])
    for seg in segs:
        axes[2].text(seg.start + (min(seg.end, n) - seg.start) / 2 - 0.5, 0,
                     model.phone_name(seg.phone, position=False), ha="center", va="center", fontsize=7)
        for ax in axes:
            ax.axvline(seg.start - 0.5, color="w" if ax is axes[0] else "k", lw=0.4, alpha=0.6)
    axes[2].set_xlabel(f"frame ({FRAME_SHIFT * 1000:.0f} ms)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def info_dir(ws: Workspace, ali_dir: Path) -> Path:
    return ws.exp / "ali_info" / Path(ali_dir).name


def alignment_info(ws: Workspace, ali_dir: str | os.PathLike | None = None, split: str = "train",
                   top_k: int = 10, utt: str | None = None, plot: bool = True) -> dict:
    """Figures for ``split`` of ``ali_dir`` (default: as ``export``), written to
    ``exp/<c>/ali_info/<dir>/<split>.json``; with ``plot``, a PNG of ``utt`` (default: the split's
    first aligned utterance)."""
    from lhotse import CutSet

    from ..kaldi_steps.kaldi_io import read_ali_dir
    from .export import resolve_ali_dir

    src = resolve_ali_dir(ws, ali_dir)
    model = AlignmentModel.from_dir(src, lang_dir=ws.lang)
    all_alis = read_ali_dir(src)
    cuts = CutSet.from_file(ws.fbank_cuts(split)).to_eager()
    ids = [c.id for c in cuts]
    alis = {i: all_alis[i] for i in ids if i in all_alis}
    missing = [i for i in ids if i not in all_alis]
    if missing:
        log.warning("ali-info: %d of %d %s utterances have no alignment in %s (e.g. %s)", len(missing), len(ids),
                    split, src, ", ".join(missing[:5]))
    if not alis:
        raise ValueError(f"ali-info: no {split} utterance has an alignment in {src}")
    stats = {"ali_dir": str(src), "split": split, "split_utterances": len(ids), "missing": len(missing),
             **alignment_stats(alis, model, top_k=top_k)}
    out = info_dir(ws, src)
    if plot:
        utt = utt or next(i for i in ids if i in alis)
        if utt not in alis:
            raise KeyError(f"ali-info: utterance {utt} has no alignment in {src} or is not in {split}")
        png = out / f"{split}_{utt}.png"
        plot_utterance(png, cuts[utt], alis[utt], model)
        stats["png"] = str(png)
    write_json(out / f"{split}.json", stats)
    stats["json"] = str(out / f"{split}.json")
    return stats


def format_info(stats: dict, max_phones: int = 60) -> str:
    """A human-readable summary of :func:`alignment_info`'s figures."""
    s, v = stats["senones"], stats["vanishing_at_40ms"]
    lines = [
        f"alignment dir: {stats['ali_dir']}  split: {stats['split']}",
        f"utterances: {stats['utterances']} aligned of {stats['split_utterances']} ({stats['missing']} missing), "
        f"{stats['frames']} frames, {stats['hours']} h",
        f"senones: {s['used']} used of {s['in_model']} in the model; majority senone {s['majority_senone']} "
        f"on {100 * s['majority_senone_rate']:.1f}% of frames",
        "top senones: " + ", ".join(f"{t['senone']} ({100 * t['share']:.1f}%)" for t in s["top"]),
        f"vanishing at 40 ms: {v['senone_vanished']}/{v['senone_segments']} senone segments "
        f"({100 * v['senone_vanished_share']:.1f}%), {v['phone_vanished']}/{v['phone_segments']} phone segments "
        f"({100 * v['phone_vanished_share']:.1f}%)",
        f"{'phone':>8} {'count':>6} {'mean':>7} {'median':>7} {'min':>5} {'max':>6}  (ms)",
    ]
    for name, d in list(stats["phone_durations"].items())[:max_phones]:
        lines.append(f"{name:>8} {d['count']:>6} {d['mean_ms']:>7.1f} {d['median_ms']:>7.1f} "
                     f"{d['min_ms']:>5.0f} {d['max_ms']:>6.0f}")
    if "png" in stats:
        lines.append(f"picture: {stats['png']}")
    lines.append(f"figures: {stats['json']}")
    return "\n".join(lines)
