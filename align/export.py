"""The ``export`` stage: a Kaldi alignment dir → Lhotse CutSets with frame-level supervision.

Input: any Kaldi alignment dir — ours (``exp/<c>/hybrid_ali``, ``exp/<c>/tri1_ali``) or one
made by real Kaldi: ``final.mdl`` + ``ali.*.gz`` [+ ``num_jobs``] + ``phones.txt`` (if the dir
has no ``phones.txt``, the corpus' ``data/<c>/lang/phones.txt`` is used). Default: ``hybrid_ali``,
falling back to ``tri1_ali`` with a warning.

Output, for every prepared split that has alignments in the dir (our stages align ``train``,
``dev`` and ``test``: test is force-aligned with its transcripts after training, for these files
only; a split with none -- ``dev`` and ``test`` in ``exp/<c>/mono``, a split ``tri1 --align-splits``
left out or ``add-split`` added after tri1 ran -- is named in the summary's
``splits_without_alignments`` and not exported):

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
  ids into approximate floats) under ``data/<c>/ali/arrays/<split>/``. Every path in the cuts
  (audio, fbank, arrays) is absolute, so they load from any working directory; with
  ``relative_to=DIR`` they are relative to ``DIR`` instead, for a tree that moves
  (load with :func:`weakalign.align.paths.rebase_cuts`).
- ``data/<c>/ali/phones.txt`` (the ``phone`` ids) and ``data/<c>/ali/info.json``
  (source dir, ``num_senones``, the frame policy, counts).
- For checking by eye: ``data/<c>/ali/ctm/<split>.{word,phone}.ctm`` (times relative to the
  utterance, sorted by utterance id and time; for a split whose utterances are parts of longer
  recordings also ``<split>.{word,phone}.rec.ctm``: keyed by recording, times in the recording,
  to score against an STM) and Praat TextGrids in the Montreal Forced
  Aligner's layout: ``data/<c>/ali/textgrid/<split>/<speaker>/<recording>.TextGrid``, one per
  recording with tiers ``words`` and ``phones`` (``<speaker> - words`` ... when a recording has
  several speakers), times in the recording, long or short text format, or MFA's JSON or CSV
  instead (``textgrid_format="json"``/``"csv"``: ``<recording>.json``/``.csv``; ``textgrids=False``
  removes an earlier export's).

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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import CutSet, NumpyFilesWriter
from lhotse.supervision import AlignmentItem
from tqdm import tqdm

from ..pipeline.io import atomic_dir, atomic_open, atomic_path, write_json
from ..pipeline.options import content_digest, declares_inputs
from ..pipeline.prerequisites import missing_output
from ..pipeline.report import SkipReport
from ..pipeline.stage import MissingInput
from ..pipeline.workspace import Workspace
from .convert import (FRAME_SHIFT, MAX_FRAME_DIFF, AlignmentModel, FrameMismatchError, WordAlignmentError,
                      reconcile_length, reconcile_segments, to_alignment_items, word_segments)
from .formats import ALIGNMENT_FILE_SUFFIX, write_alignment_file, write_ctm
from .kaldi_data import is_segment
from .paths import relative_cut

log = logging.getLogger("weakalign")

DEFAULT_ALI_DIRS = ("hybrid_ali", "tri1_ali")
#: The Montreal Forced Aligner's tier names.
WORD_TIER, PHONE_TIER = "words", "phones"


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


def textgrid_files(aligned) -> dict[str, tuple[dict[str, list[AlignmentItem]], float]]:
    """The TextGrids of ``(cut, CutAlignment)`` pairs in MFA's layout: ``{relative path: (tiers, xmax)}``.

    One file per recording, ``<speaker>/<recording id>.TextGrid`` (the speaker folders of a
    corpus laid out per speaker, as MFA mirrors them), with times in the recording. Tiers are
    ``words`` and ``phones``; a recording with several speakers gets ``<speaker> - words`` and
    ``<speaker> - phones`` per speaker (as MFA names them) and sits in no speaker folder.
    """
    by_recording = defaultdict(list)
    for cut, ca in aligned:
        by_recording[cut.recording_id].append((cut, ca))
    files = {}
    for rec_id, group in by_recording.items():
        group.sort(key=lambda pair: pair[0].start)
        speakers = list(dict.fromkeys(cut.supervisions[0].speaker for cut, _ in group))
        tiers: dict[str, list[AlignmentItem]] = {}
        for cut, ca in group:
            prefix = "" if len(speakers) == 1 else f"{cut.supervisions[0].speaker} - "
            tiers.setdefault(prefix + WORD_TIER, []).extend(w.with_offset(cut.start) for w in ca.word_items or [])
            tiers.setdefault(prefix + PHONE_TIER, []).extend(p.with_offset(cut.start) for p in ca.phone_items)
        folder = speakers[0] if len(speakers) == 1 and speakers[0] else ""
        first = group[0][0]
        xmax = first.recording.duration if first.has_recording else max(cut.end for cut, _ in group)
        files[os.path.join(folder, f"{rec_id}.TextGrid")] = (tiers, xmax)
    return files


def ctm_items(ca: CutAlignment, kind: str) -> list[AlignmentItem]:
    """The ``word`` or ``phone`` segments of one utterance (no words: none)."""
    return (ca.word_items or []) if kind == "word" else ca.phone_items


def recording_ctm(aligned, kind: str) -> list[tuple[str, list[AlignmentItem]]]:
    """``(recording id, items in recording time)`` of ``(cut, CutAlignment)`` pairs, for the
    recording-level CTM of ``kind``."""
    by_recording = defaultdict(list)
    for cut, ca in aligned:
        by_recording[cut.recording_id].extend(item.with_offset(cut.start) for item in ctm_items(ca, kind))
    return list(by_recording.items())


def write_ctms(ctm_dir: Path, split: str, aligned) -> None:
    """The utterance-level CTMs of ``aligned``, and the recording-level ones when some utterance
    is part of a longer recording (else an earlier export's are removed)."""
    segmented = any(is_segment(cut.start, cut.end, cut.recording.duration) for cut, _ in aligned if cut.has_recording)
    for kind in ("word", "phone"):
        write_ctm(ctm_dir / f"{split}.{kind}.ctm", [(cut.id, ctm_items(ca, kind)) for cut, ca in aligned])
        if segmented:
            write_ctm(ctm_dir / f"{split}.{kind}.rec.ctm", recording_ctm(aligned, kind))
        else:
            (ctm_dir / f"{split}.{kind}.rec.ctm").unlink(missing_ok=True)


def write_textgrids(tg_dir: Path, aligned, format: str = "long") -> None:
    """Replace ``tg_dir`` with the :func:`textgrid_files` of ``aligned``, in ``format`` (Praat's long
    or short TextGrid, or MFA's ``json`` or ``csv``, named ``<recording>.json``/``.csv``)."""
    with atomic_dir(tg_dir) as tmp:
        for rel_path, (tiers, xmax) in textgrid_files(aligned).items():
            path = (tmp / rel_path).with_suffix(ALIGNMENT_FILE_SUFFIX[format])
            write_alignment_file(path, tiers, xmax=xmax, format=format, speaker=Path(rel_path).parent.name)


def export_split(ws: Workspace, split: str, model: AlignmentModel, alignments: dict[str, np.ndarray],
                 report: SkipReport, *, max_frame_diff: int = MAX_FRAME_DIFF, textgrids: bool = True,
                 textgrid_format: str = "long", relative_to: str | os.PathLike | None = None) -> dict:
    """Write ``ws.ali_cuts(split)``, its arrays, CTMs and (optionally) TextGrids; return counts."""
    out_dir = export_dir(ws)
    cuts = CutSet.from_file(ws.fbank_cuts(split))
    storage = out_dir / "arrays" / split
    exported, aligned = [], []
    counts = {"cuts": 0, "exported": 0, "no_alignment": 0, "frame_mismatch": 0, "padded": 0, "trimmed": 0,
              "no_word_tier": 0, "frames": 0}
    with atomic_dir(storage) as staging, NumpyFilesWriter(staging) as writer:
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
            # Absolute, as the features stage writes its paths: the cuts load from any working dir.
            out = _with_alignment(cut, ca, writer, os.path.abspath(storage), model.num_pdfs)
            exported.append(relative_cut(out, relative_to) if relative_to is not None else out)
            aligned.append((cut, ca))
            counts["exported"] += 1
            counts["frames"] += cut.num_frames
    write_ctms(out_dir / "ctm", split, aligned)
    if not exported:
        return _no_split(ws, split, counts)
    if textgrids:
        write_textgrids(out_dir / "textgrid" / split, aligned, textgrid_format)
    else:  # what an earlier export left for this split must not pass for this one's
        shutil.rmtree(out_dir / "textgrid" / split, ignore_errors=True)
    with atomic_path(ws.ali_cuts(split)) as tmp:
        CutSet.from_cuts(exported).to_file(tmp)
    log.info("export %s: %d/%d cuts exported (%d without alignment, %d frame mismatches, %d padded, %d trimmed, "
             "%d without word tier)", split, counts["exported"], counts["cuts"], counts["no_alignment"],
             counts["frame_mismatch"], counts["padded"], counts["trimmed"], counts["no_word_tier"])
    return counts


def drop_split_outputs(ws: Workspace, split: str) -> None:
    """Remove an earlier export's cuts, CTMs and TextGrids of ``split``: they are not this export's."""
    ws.ali_cuts(split).unlink(missing_ok=True)
    for kind in ("word", "phone"):
        for suffix in ("ctm", "rec.ctm"):
            (export_dir(ws) / "ctm" / f"{split}.{kind}.{suffix}").unlink(missing_ok=True)
    shutil.rmtree(export_dir(ws) / "textgrid" / split, ignore_errors=True)


def _no_split(ws: Workspace, split: str, counts: dict) -> dict:
    """A split none of whose cuts could be exported (every alignment off by too many frames, or
    bad): said, and nothing of it written (lhotse reads an empty CutSet file back as ``None``)."""
    drop_split_outputs(ws, split)
    log.warning("export %s: none of its %d cuts could be exported: %s not written",
                split, counts["cuts"], ws.ali_cuts(split))
    return counts


def write_phone_table(path: Path, names: list[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{name} {i}\n" for i, name in enumerate(names))


def export_alignments(ws: Workspace, ali_dir: str | os.PathLike | None = None, *, splits=None,
                      max_frame_diff: int = MAX_FRAME_DIFF, textgrids: bool = True, textgrid_format: str = "long",
                      relative_to: str | os.PathLike | None = None, validate: bool = True) -> dict:
    """Export the alignments of ``ali_dir`` (default: see :func:`resolve_ali_dir`) for ``splits``
    (default: every prepared split; those without any alignment in the dir are listed, not exported).

    Returns the stage summary (``outputs``, per-split counts, ``splits_without_alignments``, ``skipped``).
    """
    from ..kaldi_steps.kaldi_io import read_ali_dir

    src = resolve_ali_dir(ws, ali_dir)
    model = AlignmentModel.from_dir(src, lang_dir=ws.lang)
    alignments = read_ali_dir(src)
    log.info("export: %d alignments from %s (%d senones, %d transition-ids)", len(alignments), src,
             model.num_pdfs, model.num_transition_ids)
    splits = list(splits) if splits is not None else ws.available_splits()
    if not splits:
        raise missing_output(ws, "export", ws.data / "manifests")
    report = SkipReport("export")
    out_dir = export_dir(ws)
    base_names = model.base_inventory
    write_phone_table(out_dir / "phones.txt", base_names)
    per_split, without_alignments, in_splits = {}, {}, set()
    for split in splits:
        if not ws.fbank_cuts(split).exists():
            raise missing_output(ws, "export", ws.fbank_cuts(split))
        ids = set(CutSet.from_file(ws.fbank_cuts(split)).ids)
        in_splits |= ids
        if ids.isdisjoint(alignments):
            without_alignments[split] = len(ids)
            drop_split_outputs(ws, split)
            log.info("export: %s: none of its %d utterances has an alignment in %s; not exported",
                     split, len(ids), src)
            continue
        per_split[split] = export_split(ws, split, model, alignments, report, max_frame_diff=max_frame_diff,
                                        textgrids=textgrids, textgrid_format=textgrid_format,
                                        relative_to=relative_to)
        if validate and per_split[split]["exported"]:
            from lhotse import validate as lhotse_validate

            _quiet_validate(CutSet.from_file(ws.ali_cuts(split)), lhotse_validate)
    unused = len(set(alignments) - in_splits)
    if unused:
        log.info("export: %d alignments belong to no prepared split and were left out", unused)
    report.log_summary()
    info = {"ali_dir": str(src), "num_senones": model.num_pdfs, "num_phones": len(base_names) - 1,
            "frame_shift": FRAME_SHIFT, "max_frame_diff": max_frame_diff,
            "frame_policy": "pad with the last label / trim, at the end",
            "paths_relative_to": None if relative_to is None else os.path.abspath(relative_to),
            "splits": per_split, "splits_without_alignments": without_alignments,
            "alignments_outside_splits": unused}
    write_json(out_dir / "info.json", info)
    outputs = [ws.ali_cuts(s) for s, counts in per_split.items() if counts["exported"]] + [out_dir / "info.json", out_dir / "phones.txt"]
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
                 textgrids: bool = True, textgrid_format: str = "long",
                 relative_to: str | os.PathLike | None = None, splits=None) -> dict:
    """The stage function (see :func:`export_alignments`)."""
    return export_alignments(ws, ali_dir, splits=splits, max_frame_diff=max_frame_diff, textgrids=textgrids,
                             textgrid_format=textgrid_format, relative_to=relative_to)
