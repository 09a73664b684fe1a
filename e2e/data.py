"""Batches for the E2E trainer from Lhotse CutSets (fbank stored with the cuts).

Which cuts: the exported alignment cuts ``data/<c>/cuts_<split>_ali.jsonl.gz``
when they exist (then *every* config trains on them, so all configs see the
same utterances), else the fbank CutSets ``data/<c>/fbank/<c>_cuts_<split>.jsonl.gz``
(enough for configs without an alignment loss).

A batch is the dict of ``docs/E2E_INTERFACE.md``: ``feats (B,T,80)``,
``feat_lens (B,)``, ``tokens``, ``senone (B,T)`` (-100 padded; only when the cuts
carry a ``senone`` TemporalArray), ``cut_ids``, ``texts``.

Example (``cuts`` a CutSet with features, ``tok`` a :class:`Tokenizer`)::

    cuts = usable_cuts(cuts, tok, SkipReport("train"))
    loader = make_loader(cuts, tok, max_duration=200, shuffle=True, seed=1)
    for batch in loader: ...
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, load_manifest
from lhotse.dataset import DynamicBucketingSampler

from ..align.loader import collate_alignments, load_cut_labels, subsampled_length
from ..pipeline.report import SkipReport
from ..pipeline.stage import MissingInput
from ..pipeline.workspace import Workspace
from .tokenizer import Tokenizer

log = logging.getLogger("weakalign")

# Alignment and fbank frame counts may differ by this much (snip_edges); the export
# reconciles them, so a larger difference here is a bad input.
MAX_FRAME_MISMATCH = 2


def cuts_path(ws: Workspace, split: str) -> Path:
    """The exported alignment cuts of ``split`` if they exist, else its fbank cuts."""
    ali = ws.ali_cuts(split)
    return ali if ali.exists() else ws.fbank_cuts(split)


def training_cuts_source(ws: Workspace) -> str:
    """``"ali"`` when the exported train and dev alignment cuts exist, else ``"fbank"``."""
    return "ali" if ws.ali_cuts("train").exists() and ws.ali_cuts("dev").exists() else "fbank"


def load_cuts(ws: Workspace, split: str, source: str) -> CutSet:
    path = ws.ali_cuts(split) if source == "ali" else ws.fbank_cuts(split)
    if not path.exists():
        raise MissingInput(f"{path} not found: run `weakalign align {ws.corpus}` "
                                f"({'export' if source == 'ali' else 'features'} stage) first")
    return load_manifest(path)


def cut_text(cut) -> str:
    return " ".join(s.text.strip() for s in cut.supervisions if s.text and s.text.strip())


def usable_cuts(cuts: CutSet, tokenizer: Tokenizer, report: SkipReport) -> CutSet:
    """Cuts that can be trained on; every other one is skipped with its reason in ``report``."""
    keep = []
    for cut in cuts:
        text = cut_text(cut)
        if not cut.has_features:
            report.skip(cut.id, "no features")
            continue
        if not text:
            report.skip(cut.id, "empty transcript")
            continue
        out_frames = subsampled_length(cut.num_frames)
        if out_frames < 1:
            report.skip(cut.id, f"too short: {cut.num_frames} frames give no encoder frame")
            continue
        n_tokens = len(tokenizer.encode(text))
        if n_tokens > out_frames:
            report.skip(cut.id, f"too short for CTC: {n_tokens} tokens > {out_frames} encoder frames")
            continue
        keep.append(cut)
    return CutSet.from_cuts(keep)


def count_senones(cuts: CutSet) -> int:
    """The senone inventory size: the export's ``num_senones`` custom field (the alignment model's
    pdf count) when the cuts carry it, else 1 + the largest senone id found."""
    declared = {c.custom["num_senones"] for c in cuts if c.custom and "num_senones" in c.custom}
    if len(declared) > 1:
        raise ValueError(f"cuts disagree on num_senones: {sorted(declared)}")
    if declared:
        return int(declared.pop())
    top = -1
    for cut in cuts:
        if cut.has_custom("senone"):
            labels = load_cut_labels(cut, "senone")
            if labels.size:
                top = max(top, int(labels.max()))
    if top < 0:
        raise ValueError("no cut carries senone labels")
    return top + 1


class AsrDataset(torch.utils.data.Dataset):
    """Maps a CutSet (one batch from the sampler) to the interface's batch dict."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        feats = [torch.from_numpy(np.asarray(c.load_features(), dtype=np.float32)) for c in cuts]
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        padded = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
        for i, f in enumerate(feats):
            padded[i, : f.shape[0]] = f
        texts = [cut_text(c) for c in cuts]
        batch = {
            "feats": padded,
            "feat_lens": lens,
            "tokens": [self.tokenizer.encode(t) for t in texts],
            "cut_ids": [c.id for c in cuts],
            "texts": texts,
        }
        if all(c.has_custom("senone") for c in cuts):
            labels = [self._senone(c, int(n)) for c, n in zip(cuts, lens)]
            batch["senone"], _ = collate_alignments(labels)
        return batch

    @staticmethod
    def _senone(cut, num_frames: int) -> np.ndarray:
        labels = load_cut_labels(cut, "senone")
        diff = len(labels) - num_frames
        if abs(diff) > MAX_FRAME_MISMATCH:
            raise ValueError(f"{cut.id}: senone alignment has {len(labels)} frames, features {num_frames}")
        if diff > 0:
            labels = labels[:num_frames]
        elif diff < 0:
            labels = np.concatenate([labels, np.full(-diff, labels[-1], dtype=labels.dtype)])
        return labels


def make_sampler(cuts: CutSet, max_duration: float, shuffle: bool, seed: int = 0, num_buckets: int = 10,
                 world_size: int | None = None, rank: int | None = None) -> DynamicBucketingSampler:
    # Keep lhotse's default sync_buckets=True: in lhotse 1.33, sync_buckets=False drops most cuts of
    # an eager CutSet from the epoch (60 cuts -> 18..23 sampled). Batches still change per epoch
    # (cuts are drawn at random within each bucket, seeded by seed + epoch).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
        return DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
                                       num_buckets=min(num_buckets, max(2, len(cuts) // 4)),  # lhotse needs >= 2
                                       world_size=world_size, rank=rank, drop_last=False)


def make_loader(cuts: CutSet, tokenizer: Tokenizer, max_duration: float, shuffle: bool, seed: int = 0,
                num_buckets: int = 10, world_size: int | None = None, rank: int | None = None):
    """``(DataLoader, sampler)``; call ``sampler.set_epoch(e)`` before each epoch."""
    sampler = make_sampler(cuts, max_duration, shuffle, seed, num_buckets, world_size, rank)
    return batch_loader(sampler, tokenizer), sampler


def batch_loader(sampler, tokenizer: Tokenizer) -> torch.utils.data.DataLoader:
    """A loader of the interface's batch dicts over a lhotse cut sampler (the sampler makes the batches)."""
    return torch.utils.data.DataLoader(AsrDataset(tokenizer), sampler=sampler, batch_size=None, num_workers=0)


def make_sortagrad_loader(cuts: CutSet, tokenizer: Tokenizer, max_duration: float,
                          world_size: int | None = None, rank: int | None = None):
    """Batches from the shortest utterances to the longest (SortaGrad, Amodei et al. 2016): CTC
    finds its first alignments on short words and leaves the all-blank plateau sooner."""
    from lhotse.dataset import SimpleCutSampler

    sampler = SimpleCutSampler(cuts.sort_by_duration(ascending=True), max_duration=max_duration, shuffle=False,
                               world_size=world_size, rank=rank, drop_last=False)
    return batch_loader(sampler, tokenizer)
