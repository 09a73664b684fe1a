"""``weakalign add-split``: a new evaluation split (e.g. speechocean762's held-out test half) added
to a finished workspace, ready for ``weakalign score``, without touching anything else.

``prepare --src <test half>`` would be a new request of the ``prepare`` stage: it would record the
test half as the corpus source and make every stage built on ``prepare`` stale (features, lang,
the GMMs, the hybrid, the export). ``add-split`` is its own stage: it reads the data dirs under
``src`` with the corpus recipe, refuses a split that is already prepared, writes the new splits'
manifests and computes their features exactly as the ``features`` stage does (MFCC with
per-speaker CMVN, fbank; the train-only global fbank statistics are left as they are), so
``weakalign score`` decodes them with the trained models next.

Alignments: ``add-split`` aligns nothing itself. The splits tri1 aligns are a declared input of
``tri1`` (:func:`weakalign.kaldi_steps.train_deltas.aligned_splits_input`), so an added split that
``tri1 --align-splits`` names (``test`` does by default) makes the next ``weakalign align`` redo
tri1 -- the same model, since only train trains it -- with the new split force-aligned; the hybrid
then resumes its BLSTM from its checkpoints and realigns, and export writes the split's cuts,
CTMs and TextGrids. Until then ``score`` works as before and the export simply has no such split.

>>> from weakalign.pipeline.recipe import dependents
>>> dependents(STAGE)    # nothing is built on an added split but the scores
[]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .corpora import RECIPES, resolve_recipe, write_split_manifests
from .features import compute_features
from .io import read_json
from .report import SkipReport
from .stage import MissingInput
from .workspace import Workspace

log = logging.getLogger("weakalign")

STAGE = "add-split"


def add_split(ws: Workspace, *, src: str | os.PathLike, recipe: str | None = None,
              audio_root: str | os.PathLike | None = None, nj: int = 2) -> dict:
    """Stage ``add-split``: the splits of ``src`` (none of them prepared yet) as manifests and features."""
    src = Path(src)
    if not src.is_dir():
        raise MissingInput(f"add-split: {src} is not a directory (give the folder that holds the new split's "
                           "Kaldi data dir, e.g. test/)")
    prepared = ws.available_splits()
    if "train" not in prepared or not ws.fbank_stats.exists():
        raise MissingInput(f"add-split: {ws.corpus} has no prepared train split with features: run "
                           f"`weakalign prepare {ws.corpus}` and `weakalign features {ws.corpus}` first")
    recipe = resolve_recipe(ws.corpus, src, recipe)
    report = SkipReport("add-split")
    splits = RECIPES[recipe](src, report, audio_root=Path(audio_root) if audio_root else None)
    already = [s for s in splits if s in prepared]
    if already:
        raise ValueError(f"add-split: {src} holds split(s) {', '.join(already)} that {ws.corpus} already has; "
                         "add-split only adds new splits (`weakalign prepare --force` prepares a corpus anew)")
    if not splits:
        raise ValueError(f"add-split: recipe {recipe} found no split under {src}")
    counts, outputs = {}, []
    for split, utts in splits.items():
        written = write_split_manifests(ws, split, utts, report)
        if written is not None:
            counts[split], paths, _ = written
            outputs += paths
    report.log_summary()
    if not counts:
        raise ValueError(f"add-split: no usable utterance in {', '.join(splits)} under {src} (see the skips above)")
    # The new split's MFCCs stored as the workspace's others (lilcom before mfcc_storage existed).
    marker = ws.done_dir / "features.json"
    storage = read_json(marker)["summary"]["feature_config"].get("mfcc_storage", "lilcom") if marker.exists() \
        else "kaldi-compressed"
    features = compute_features(ws, nj=nj, splits=list(counts), mfcc_storage=storage)
    # The features' own skips stay under "features", as that stage reports them.
    return {"recipe": recipe, "src": str(src), "splits": counts, **report.summary(),
            "features": {k: v for k, v in features.items() if k != "outputs"},
            "outputs": outputs + features["outputs"]}

