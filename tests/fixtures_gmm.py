"""Session fixtures that run real stages (see conftest.py)."""

import pytest

from weakalign.kaldi_steps.train_deltas import tri1_stage
from weakalign.kaldi_steps.train_mono import mono_stage
from weakalign.pipeline.stage import run_stage

#: Small settings for the slice (60 train utterances): a few iterations, few leaves.
MONO_SLICE = {"num_iters": 8, "total_gauss": 250, "max_iter_inc": 6, "decode": False}
TRI1_SLICE = {"num_iters": 6, "num_leaves": 120, "total_gauss": 300, "max_iter_inc": 4,
              "realign_iters": (3,), "thresh": 50.0, "decode": False}


@pytest.fixture(scope="session")
def an4_slice_tri1(an4_slice, an4_lang):
    """The ``an4_slice`` workspace after the real ``lang``, ``mono`` and ``tri1`` stages with small
    settings (``MONO_SLICE``, ``TRI1_SLICE``; 2 jobs; no decoding), as a full run lays them out:
    ``exp/an4/mono`` and ``exp/an4/tri1`` (final.mdl, tree, final.occs, phones.txt, num_jobs,
    ali.N.gz, diagnostics.json) and ``exp/an4/tri1_ali`` (final.mdl, tree, ali.N.gz of train,
    dev *and* test -- jobs 1-2, 3-4, 5-6 --, ``utt2split``, ``splits.json``). Returns the Workspace;
    read-only, shared by the session.
    """
    ws = an4_slice
    run_stage("mono", ws, mono_stage, nj=2, **MONO_SLICE)
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    return ws
