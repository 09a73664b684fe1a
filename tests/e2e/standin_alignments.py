"""Stand-in senone labels on real AN4 fbank cuts, for tests of the alignment-loss plumbing.

These are NOT alignments: each 10 ms frame's label is its frame energy (sum of the
real log-mel fbank) quantised into ``NUM_STANDIN_SENONES`` bins by quantiles of the
training frames. They are real, cheap, frame-synchronous and learnable from the
input, which is all the loss/loader/trainer plumbing needs. They are attached as a
custom ``senone`` TemporalArray (stored losslessly as int64 with lhotse's
NumpyFilesWriter), exactly where the export stage puts the real ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, load_manifest
from lhotse.features.io import NumpyFilesWriter

from weakalign.pipeline.workspace import Workspace

NUM_STANDIN_SENONES = 8


def energy_bins(cuts: CutSet, num_bins: int = NUM_STANDIN_SENONES) -> np.ndarray:
    energies = np.concatenate([np.asarray(c.load_features()).sum(axis=1) for c in cuts])
    return np.quantile(energies, np.linspace(0, 1, num_bins + 1)[1:-1])


def standin_labels(cut, edges: np.ndarray) -> np.ndarray:
    return np.digitize(np.asarray(cut.load_features()).sum(axis=1), edges).astype(np.int64)


def attach_standin_senones(cuts: CutSet, edges: np.ndarray, storage_dir: Path) -> CutSet:
    out = []
    with NumpyFilesWriter(storage_dir) as writer:
        for cut in cuts:
            arr = writer.store_array(cut.id, standin_labels(cut, edges), frame_shift=0.01, temporal_dim=0)
            out.append(cut.with_custom("senone", arr))
    return CutSet.from_cuts(out)


def make_standin_ali_workspace(src: Workspace, root: Path) -> Workspace:
    """A workspace whose ``ali_cuts(split)`` are ``src``'s fbank cuts with stand-in senones."""
    ws = Workspace(src.corpus, data_root=root / "data", exp_root=root / "exp")
    ws.fbank_stats.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src.fbank_stats, ws.fbank_stats)
    train = load_manifest(src.fbank_cuts("train"))
    edges = energy_bins(train)
    for split in ("train", "dev"):
        cuts = load_manifest(src.fbank_cuts(split))
        attach_standin_senones(cuts, edges, root / "senone" / split).to_file(ws.ali_cuts(split))
    return ws


@pytest.fixture(scope="session")
def an4_standin_ali(an4_slice, tmp_path_factory) -> Workspace:
    """The an4_slice cuts as ``cuts_{train,dev}_ali.jsonl.gz`` with stand-in (energy-bin) senones."""
    return make_standin_ali_workspace(an4_slice, tmp_path_factory.mktemp("an4_standin_ali"))
