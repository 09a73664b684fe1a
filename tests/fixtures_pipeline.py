"""Session fixtures that run real stages (see conftest.py)."""

import pytest

from weakalign.pipeline.corpora import prepare
from weakalign.pipeline.features import compute_features
from weakalign.pipeline.stage import run_stage
from weakalign.pipeline.workspace import Workspace

#: The slice ``an4_slice`` prepares: whole-speaker slices of each split, at most 6 utterances per speaker.
AN4_SLICE = {"max_utts_per_split": {"train": 60, "dev": 12, "test": 12}, "utts_per_speaker": 6}


@pytest.fixture(scope="session")
def an4_slice(tmp_path_factory, corpora_dir) -> Workspace:
    """A ``Workspace("an4")`` in a temp dir where the real ``prepare`` and ``features`` stages ran
    on a slice of AN4: 60 train utterances (10 speakers), 12 dev (2 speakers, disjoint from train,
    the same dev speakers as a full run), 12 test (2 speakers); 6 utterances per speaker.

    It holds everything a full run's first two stages write (see docs/LAYOUT.md): manifests
    ``ws.manifest(kind, split)``, MFCC cuts ``ws.mfcc_cuts(split)`` with per-speaker CMVN
    ``ws.cmvn(split)``, fbank cuts ``ws.fbank_cuts(split)`` and ``ws.fbank_stats``, the
    done-markers and logs under ``ws.exp``. Treat it as read-only: it is shared by the session.
    """
    root = tmp_path_factory.mktemp("an4_slice")
    ws = Workspace("an4", data_root=root / "data", exp_root=root / "exp")
    run_stage("prepare", ws, prepare, src=corpora_dir / "an4", **AN4_SLICE)
    run_stage("features", ws, compute_features, nj=1)
    return ws
