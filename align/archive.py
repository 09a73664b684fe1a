"""An alignment set kept as plain files: the Kaldi alignment dir an export read, copied with
what names it, so that E2E runs can be retrained on the same labels on another machine.

The GMM and hybrid stages are not bit-reproducible from one run to the next (the order in which
Dask jobs and threads add up floats changes a tree split or a Viterbi tie), so the labels behind
published runs are kept, not rebuilt. After ``export``::

    weakalign archive-ali an4 --out results/an4/alignment_sets     # -> results/an4/alignment_sets/<digest8>/

and on any machine with the corpus prepared (``weakalign align an4 --stop-after lang``)::

    weakalign export an4 --ali-dir results/an4/alignment_sets/<digest8>

gives cuts whose ``alignment_digest`` (what an E2E run's ``training.json`` records) is the archive's.

The archive holds ``final.mdl``, ``tree``, ``phones.txt``, ``num_jobs`` and ``ali.*.gz`` as Kaldi
wrote them, and ``alignment_set.json``: the digests of the exported train + dev cuts, the export's
counts, and the options and code of the stage that made the alignments.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from lhotse import load_manifest

from ..pipeline.io import atomic_dir, read_json, write_json
from ..pipeline.stage import MissingInput
from ..pipeline.workspace import Workspace
from .export import alignment_source
from .loader import alignment_digest, cut_list_digest

KEPT_FILES = ("final.mdl", "tree", "phones.txt", "num_jobs")
DIGEST_SPLITS = ("train", "dev")   # what an E2E run trains and selects on: its training.json digest
MANIFEST = "alignment_set.json"


def last_export(ws: Workspace) -> tuple[Path, dict]:
    """The alignment dir the workspace's last export read and that export's summary (its done-marker),
    refused when the dir has no final.mdl or ali.*.gz (:func:`alignment_source` checks) or its model or
    alignments changed since (the exported cuts, and so the digest, would not be theirs)."""
    marker = ws.done_dir / "export.json"
    if not marker.exists():
        raise MissingInput(f"{marker} not found: run the export stage before archiving its alignments")
    done = read_json(marker)
    src = Path(done["summary"]["ali_dir"])
    if alignment_source(ws, {"ali_dir": str(src)}) != {"alignments": done["inputs"].get("alignments")}:
        raise MissingInput(f"{src} changed since the export read it: run the export stage again first")
    return src, done["summary"]


def exported_digests(ws: Workspace) -> dict:
    """``alignment_digest`` and ``cut_list_digest`` of the exported train + dev cuts."""
    missing = [str(ws.ali_cuts(s)) for s in DIGEST_SPLITS if not ws.ali_cuts(s).exists()]
    if missing:
        raise MissingInput(f"no exported cuts {', '.join(missing)}: run the export stage")
    cuts = [c for s in DIGEST_SPLITS for c in load_manifest(ws.ali_cuts(s))]
    return {"alignment_digest": alignment_digest(cuts), "cut_list_digest": cut_list_digest(cuts)}


def source_stage(ws: Workspace, ali_dir: Path) -> dict | None:
    """Options and code of the stage whose output ``ali_dir`` is (``exp/<c>/<stage>_ali``), if any."""
    if ali_dir.parent.resolve() != ws.exp.resolve() or not ali_dir.name.endswith("_ali"):
        return None
    marker = ws.done_dir / f"{ali_dir.name[:-len('_ali')]}.json"
    if not marker.exists():
        return None
    done = read_json(marker)
    summary = {k: v for k, v in (done.get("summary") or {}).items() if k != "outputs"}   # accuracy, WER, counts
    return {**{k: done.get(k) for k in ("stage", "options", "code", "finished")}, "summary": summary}


def archive_alignment_set(ws: Workspace, out_root: str | Path) -> Path:
    """Copy the alignment dir of the workspace's export to ``out_root/<digest8>/`` with its
    ``alignment_set.json``; returns that dir. Rewrites an archive of the same digest whole."""
    src, export = last_export(ws)
    alis = sorted(src.glob("ali.*.gz"))
    digests = exported_digests(ws)
    manifest = {
        "corpus": ws.corpus, **digests, "digest_splits": list(DIGEST_SPLITS),
        "source_ali_dir": str(src), "source_stage": source_stage(ws, src),
        "num_senones": export.get("num_senones"), "frame_shift": export.get("frame_shift"),
        "export_splits": export.get("splits"),
        "archived": datetime.datetime.now().isoformat(timespec="seconds"),
        "restore": "weakalign export CORPUS --ali-dir THIS_DIR (in a workspace prepared up to lang)",
    }
    dest = Path(out_root) / digests["alignment_digest"][:8]
    with atomic_dir(dest) as tmp:
        for path in [src / name for name in KEPT_FILES if (src / name).exists()] + alis:
            shutil.copy2(path, tmp / path.name)
        write_json(tmp / MANIFEST, manifest)
    return dest
