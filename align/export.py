"""The ``export`` stage: a Kaldi alignment dir → Lhotse CutSets with frame-level supervision.

Input: any Kaldi alignment dir — ours (``exp/<c>/hybrid_ali``, ``exp/<c>/tri1_ali``) or one
made by real Kaldi: ``final.mdl`` + ``ali.*.gz`` [+ ``num_jobs``] + ``phones.txt`` (if the dir
has no ``phones.txt``, the corpus' ``data/<c>/lang/phones.txt`` is used). Default: ``hybrid_ali``,
falling back to ``tri1_ali`` with a warning.

Output, for ``train`` and ``dev``:

- ``data/<c>/cuts_<split>_ali.jsonl.gz``: the fbank CutSet (``ws.fbank_cuts(split)``) where each
  cut also carries, in ``cut.custom``:

  * ``senone``: ``TemporalArray`` of int32 pdf-ids, one per fbank frame (``frame_shift=0.01``,
    exactly ``cut.num_frames`` entries) — ``cut.load_senone()``;
  * ``phone``: ``TemporalArray`` of int32 position-independent phone ids (table
    ``data/<c>/ali/phones.txt``; 0 = ``<eps>`` is never used) — ``cut.load_phone()``;
  * ``num_senones``: the number of pdfs of the alignment model (senone ids are ``0..num_senones-1``);

  and its supervision has ``alignment["phone"]`` (position-independent phone names) and
  ``alignment["word"]`` (the transcript's words) as Lhotse ``AlignmentItem`` lists
  (start and duration in seconds relative to the cut, like ``supervision.start``). Silence
  between words is in the phone tier only.
- The arrays are ``.npy`` files (lhotse's lossless ``NumpyFilesWriter``; lilcom would turn the
  ids into approximate floats) under ``data/<c>/ali/arrays/<split>/``.
- ``data/<c>/ali/phones.txt`` (the ``phone`` ids) and ``data/<c>/ali/info.json``
  (source dir, ``num_senones``, the frame policy, counts).
- For checking by eye: ``data/<c>/ali/ctm/<split>.{word,phone}.ctm`` (times relative to the
  utterance) and Praat ``data/<c>/ali/textgrid/<split>/<utt>.TextGrid`` (tiers ``word``, ``phone``;
  ``textgrids=False`` removes an earlier export's).

Frame policy (see :func:`weakalign.align.convert.reconcile_length`): an alignment shorter or
longer than the cut's fbank frames by at most ``max_frame_diff`` (2) frames is padded with its
last label or trimmed, at the end; a larger difference skips the utterance, named. Utterances
with no alignment in the dir are skipped, named and counted, so the exported CutSet is exactly
the list of utterances every E2E config trains on. A split none of whose utterances is in the
dir (``exp/<c>/mono`` aligns train only) is reported in ``empty_splits`` and not written.

The stage's identity includes the alignment dir it read and a content hash of its
``final.mdl`` and ``ali.*.gz`` (:func:`alignment_source`): a new ``hybrid_ali``, or alignments
rewritten in place, make the next request export again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import CutSet, NumpyFilesWriter
from lhotse.supervision import AlignmentItem
from tqdm import tqdm

from ..pipeline.io import atomic_open, atomic_path, write_json
from ..pipeline.options import content_digest, declares_inputs
from ..pipeline.report import SkipReport
from ..pipeline.stage import MissingInput
from ..pipeline.workspace import Workspace
from .convert import (FRAME_SHIFT, MAX_FRAME_DIFF, AlignmentModel, FrameMismatchError, WordAlignmentError,
                      reconcile_length, reconcile_segments, to_alignment_items, word_segments)
from .formats import format_ctm_lines, write_textgrid

log = logging.getLogger("weakalign")

EXPORT_SPLITS = ("train", "dev")
DEFAULT_ALI_DIRS = ("hybrid_ali", "tri1_ali")


def resolve_ali_dir(ws: Workspace, ali_dir: str | os.PathLike | None = None) -> Path:
    """The alignment dir to export: ``ali_dir`` if given, else ``exp/<c>/hybrid_ali``, else
    ``exp/<c>/tri1_ali`` (with a warning). Raises :class:`MissingInput` when there is none."""
    if ali_dir is not None:
        path = Path(ali_dir)
        missing = [what for what, found in (("final.mdl", (path / "final.mdl").is_file()),
                                             ("ali.*.gz", any(path.glob("ali.*.gz")))) if not found]
        if missing:
            raise MissingInput(f"alignment dir {path} has no {' and no '.join(missing)}: --ali-dir takes a Kaldi "
                               "alignment dir (final.mdl + ali.*.gz [+ phones.txt])")
        return path
    for i, name in enumerate(DEFAULT_ALI_DIRS):
        path = ws.exp / name
        if (path / "final.mdl").exists() and any(path.glob("ali.*.gz")):
            if i > 0:
                log.warning("%s not found; using the alignments of %s instead",
                            ws.exp / DEFAULT_ALI_DIRS[0], path)
            return path
    raise MissingInput(f"no alignment dir: none of {', '.join(str(ws.exp / n) for n in DEFAULT_ALI_DIRS)} "
                       "has final.mdl and ali.*.gz (run the tri1 or hybrid stage, or pass --ali-dir)")


def alignment_source(ws: Workspace, options: dict) -> dict:
    """The export's input: which alignment dir, and the content of its model and alignments (a
    re-export follows a new ``hybrid_ali``, or alignments rewritten in place, e.g. by Kaldi)."""
    src = resolve_ali_dir(ws, options.get("ali_dir"))
    return {"alignments": f"{src} {content_digest([src / 'final.mdl', *src.glob('ali.*.gz')], gunzip=True)}"}


def export_dir(ws: Workspace) -> Path:
    """``data/<c>/ali``: the exported arrays, phone table, CTMs and TextGrids."""
    return ws.data / "ali"


@dataclass
class CutAlignment:
    """One utterance's alignment, reconciled to its fbank frames."""

    senone: np.ndarray  # int32, (num_frames,)
    phone: np.ndarray  # int32 position-independent phone ids, (num_frames,)
    phone_items: list[AlignmentItem]
    word_items: list[AlignmentItem] | None
    word_error: str | None  # why there is no word tier
    frame_diff: int  # alignment frames - feature frames


def align_cut(cut, ali: np.ndarray, model: AlignmentModel, max_frame_diff: int = MAX_FRAME_DIFF) -> CutAlignment:
    """Convert one cut's transition-ids; raises ``FrameMismatchError``/``ValueError`` naming the cut."""
    ali = model.check(ali, cut.id)
    n = cut.num_frames
    senone = reconcile_length(model.senones(ali).astype(np.int32), n, cut.id, max_frame_diff)
    phone = reconcile_length(model.base_phones(ali).astype(np.int32), n, cut.id, max_frame_diff)
    segs = model.segments(ali, cut.id)
    sup = cut.supervisions[0]
    end = sup.start + sup.duration
    phone_items = to_alignment_items(reconcile_segments(segs, len(ali), n),
                                     lambda s: model.phone_name(s.phone, position=False), max_end=end)
    word_items, word_error = None, None
    try:
        words = word_segments(segs, model, (sup.text or "").split(), cut.id)
        word_items = to_alignment_items(reconcile_segments(words, len(ali), n), lambda w: w.word, max_end=end)
    except WordAlignmentError as e:
        word_error = str(e)
    return CutAlignment(senone, phone, phone_items, word_items, word_error, len(ali) - n)


def _with_alignment(cut, ca: CutAlignment, writer, storage_path: str, num_senones: int):
    def store(name: str, values: np.ndarray):
        arr = writer.store_array(f"{cut.id}.{name}", values, frame_shift=FRAME_SHIFT, temporal_dim=0,
                                 start=cut.start)
        # Written into a staging dir that is renamed to ``storage_path`` when the split is done.
        return dataclasses.replace(arr, array=dataclasses.replace(arr.array, storage_path=storage_path))

    sup = cut.supervisions[0].with_alignment("phone", ca.phone_items)
    if ca.word_items is not None:
        sup = sup.with_alignment("word", ca.word_items)
    cut = dataclasses.replace(cut, supervisions=[sup] + list(cut.supervisions[1:]))
    cut = cut.with_custom("senone", store("senone", ca.senone))
    cut = cut.with_custom("phone", store("phone", ca.phone))
    return cut.with_custom("num_senones", int(num_senones))


def export_split(ws: Workspace, split: str, model: AlignmentModel, alignments: dict[str, np.ndarray],
                 report: SkipReport, *, max_frame_diff: int = MAX_FRAME_DIFF, textgrids: bool = True) -> dict:
    """Write ``ws.ali_cuts(split)``, its arrays, CTMs and (optionally) TextGrids; return counts."""
    out_dir = export_dir(ws)
    cuts = CutSet.from_file(ws.fbank_cuts(split))
    storage = out_dir / "arrays" / split
    staging = storage.with_name(f".tmp{os.getpid()}.{split}")
    shutil.rmtree(staging, ignore_errors=True)
    exported, word_ctm, phone_ctm = [], [], []
    tg_items = []
    counts = {"cuts": 0, "exported": 0, "no_alignment": 0, "frame_mismatch": 0, "padded": 0, "trimmed": 0,
              "no_word_tier": 0, "frames": 0}
    try:
        with NumpyFilesWriter(staging) as writer:
            for cut in tqdm(cuts, desc=f"export {split}", leave=False):
                counts["cuts"] += 1
                ali = alignments.get(cut.id)
                if ali is None:
                    counts["no_alignment"] += 1
                    report.skip(cut.id, f"no alignment: not in the alignment dir ({split})")
                    continue
                try:
                    ca = align_cut(cut, ali, model, max_frame_diff)
                except FrameMismatchError as e:
                    counts["frame_mismatch"] += 1
                    report.skip(cut.id, f"frame mismatch: {e}")
                    continue
                except ValueError as e:
                    report.skip(cut.id, f"bad alignment: {e}")
                    continue
                counts["padded"] += ca.frame_diff < 0
                counts["trimmed"] += ca.frame_diff > 0
                if ca.word_error:
                    counts["no_word_tier"] += 1
                    report.warn(cut.id, f"no word tier: {ca.word_error}")
                exported.append(_with_alignment(cut, ca, writer, str(storage), model.num_pdfs))
                counts["exported"] += 1
                counts["frames"] += cut.num_frames
                phone_ctm += format_ctm_lines(cut.id, ca.phone_items)
                word_ctm += format_ctm_lines(cut.id, ca.word_items or [])
                tg_items.append((cut.id, cut.duration, ca))
        if storage.exists():
            shutil.rmtree(storage)
        if staging.exists():
            staging.rename(storage)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # What an earlier export left for this split must not pass for this one's.
    tg_dir = out_dir / "textgrid" / split
    shutil.rmtree(tg_dir, ignore_errors=True)
    if not exported:
        return _no_split(ws, split, counts)
    for kind, lines in (("word", word_ctm), ("phone", phone_ctm)):
        with atomic_open(out_dir / "ctm" / f"{split}.{kind}.ctm", "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
    if textgrids:
        for utt_id, duration, ca in tg_items:
            tiers = {"word": ca.word_items or [], "phone": ca.phone_items}
            write_textgrid(tg_dir / f"{utt_id}.TextGrid", tiers, xmax=duration)
    out_cuts = CutSet.from_cuts(exported)
    with atomic_path(ws.ali_cuts(split)) as tmp:
        out_cuts.to_file(tmp)
    log.info("export %s: %d/%d cuts exported (%d without alignment, %d frame mismatches, %d padded, %d trimmed, "
             "%d without word tier)", split, counts["exported"], counts["cuts"], counts["no_alignment"],
             counts["frame_mismatch"], counts["padded"], counts["trimmed"], counts["no_word_tier"])
    return counts


def _no_split(ws: Workspace, split: str, counts: dict) -> dict:
    """A split none of whose cuts has an alignment (e.g. ``exp/<c>/mono`` aligns train only):
    said, and nothing of it written (lhotse reads an empty CutSet file back as ``None``)."""
    ws.ali_cuts(split).unlink(missing_ok=True)
    for kind in ("word", "phone"):
        (export_dir(ws) / "ctm" / f"{split}.{kind}.ctm").unlink(missing_ok=True)
    log.warning("export %s: none of its %d cuts has an alignment in the alignment dir: %s not written",
                split, counts["cuts"], ws.ali_cuts(split))
    return counts


def write_phone_table(path: Path, names: list[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{name} {i}\n" for i, name in enumerate(names))


def export_alignments(ws: Workspace, ali_dir: str | os.PathLike | None = None, *,
                      splits=EXPORT_SPLITS, max_frame_diff: int = MAX_FRAME_DIFF, textgrids: bool = True,
                      validate: bool = True) -> dict:
    """Export the alignments of ``ali_dir`` (default: see :func:`resolve_ali_dir`) for ``splits``.

    Returns the stage summary (``outputs``, per-split counts, ``skipped``).
    """
    from ..kaldi_steps.kaldi_io import read_ali_dir

    src = resolve_ali_dir(ws, ali_dir)
    model = AlignmentModel.from_dir(src, lang_dir=ws.lang)
    alignments = read_ali_dir(src)
    log.info("export: %d alignments from %s (%d senones, %d transition-ids)", len(alignments), src,
             model.num_pdfs, model.num_transition_ids)
    report = SkipReport("export")
    out_dir = export_dir(ws)
    base_names = model.base_inventory
    write_phone_table(out_dir / "phones.txt", base_names)
    per_split = {}
    for split in splits:
        if not ws.fbank_cuts(split).exists():
            raise FileNotFoundError(f"export: {ws.fbank_cuts(split)} missing (run the features stage)")
        per_split[split] = export_split(ws, split, model, alignments, report, max_frame_diff=max_frame_diff,
                                        textgrids=textgrids)
        if validate and per_split[split]["exported"]:
            from lhotse import validate as lhotse_validate

            _quiet_validate(CutSet.from_file(ws.ali_cuts(split)), lhotse_validate)
    in_splits = set()
    for split in splits:
        in_splits.update(c.id for c in CutSet.from_file(ws.fbank_cuts(split)))
    unused = len(set(alignments) - in_splits)
    if unused:
        log.info("export: %d alignments belong to no exported split (e.g. test) and were left out", unused)
    report.log_summary()
    exported = [s for s in splits if per_split[s]["exported"]]
    info = {"ali_dir": str(src), "num_senones": model.num_pdfs, "num_phones": len(base_names) - 1,
            "frame_shift": FRAME_SHIFT, "max_frame_diff": max_frame_diff,
            "frame_policy": "pad with the last label / trim, at the end", "splits": per_split,
            "empty_splits": [s for s in splits if s not in exported], "alignments_outside_splits": unused}
    write_json(out_dir / "info.json", info)
    outputs = [ws.ali_cuts(s) for s in exported] + [out_dir / "info.json", out_dir / "phones.txt"]
    return {**info, "outputs": [str(p) for p in outputs], **report.summary()}


def _quiet_validate(cuts: CutSet, validate_fn) -> None:
    """``lhotse.validate`` without its per-cut warning that ``num_frames * 0.01`` differs from the
    duration by under half a frame (lhotse rounds frame counts; so do we)."""
    lhotse_log = logging.getLogger()
    previous = lhotse_log.level
    lhotse_log.setLevel(logging.ERROR)
    try:
        validate_fn(cuts, read_data=False)
    finally:
        lhotse_log.setLevel(previous)


@declares_inputs(alignment_source)
def export_stage(ws: Workspace, ali_dir: str | os.PathLike | None = None, *, max_frame_diff: int = MAX_FRAME_DIFF,
                 textgrids: bool = True) -> dict:
    """The stage function (see :func:`export_alignments`)."""
    return export_alignments(ws, ali_dir, max_frame_diff=max_frame_diff, textgrids=textgrids)
