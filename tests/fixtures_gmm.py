"""Session fixtures that run real stages (see conftest.py)."""

import os

import pytest

from weakalign.kaldi_steps.train_deltas import tri1_stage
from weakalign.kaldi_steps.train_lda_mllt import tri2_stage
from weakalign.kaldi_steps.train_mono import mono_stage
from weakalign.kaldi_steps.train_sat import tri3_stage
from weakalign.pipeline.stage import run_stage
from weakalign.pipeline.workspace import Workspace

#: Small settings for the slice (60 train utterances): a few iterations, few leaves.
MONO_SLICE = {"num_iters": 8, "total_gauss": 250, "max_iter_inc": 6, "decode": False}
TRI1_SLICE = {"num_iters": 6, "num_leaves": 120, "total_gauss": 300, "max_iter_inc": 4,
              "realign_iters": (3,), "thresh": 50.0, "decode": False}
#: tri2 on the slice: as TRI1_SLICE, MLLT on iterations 2 and 4 of 6.
TRI2_SLICE = {**TRI1_SLICE, "mllt_iters": (2, 4)}
#: tri3 on the slice: as TRI1_SLICE, fMLLR re-estimated on iterations 2 and 4 of 6 (after the first one).
TRI3_SLICE = {**TRI1_SLICE, "fmllr_iters": (2, 4)}


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


def linked_tri1_workspace(src: Workspace, root, exp_dirs=("mono", "tri1", "tri1_ali")) -> Workspace:
    """A workspace under ``root`` whose features, lang, mono and tri1 outputs (or ``exp_dirs``) are links
    to ``src``'s (read-only), for stages that start from tri1 (``tri2``) without touching the session slice."""
    ws = Workspace(src.corpus, data_root=root / "data", exp_root=root / "exp")
    ws.data.mkdir(parents=True)
    ws.exp.mkdir(parents=True)
    for name in ("manifests", "mfcc", "lang"):
        os.symlink(src.data / name, ws.data / name)
    for name in exp_dirs:
        os.symlink(src.exp / name, ws.exp / name)
    return ws


@pytest.fixture(scope="session")
def an4_slice_tri2(an4_slice_tri1, tmp_path_factory):
    """A workspace linked to ``an4_slice_tri1`` (:func:`linked_tri1_workspace`) after the real ``tri2``
    stage with ``TRI2_SLICE`` (2 jobs, no decoding): ``exp/an4/tri2`` and ``exp/an4/tri2_ali``.
    Returns the Workspace; read-only, shared by the session."""
    ws = linked_tri1_workspace(an4_slice_tri1, tmp_path_factory.mktemp("an4_slice_tri2"))
    run_stage("tri2", ws, tri2_stage, nj=2, **TRI2_SLICE)
    return ws


@pytest.fixture(scope="session")
def an4_slice_tri3(an4_slice_tri2, tmp_path_factory):
    """A workspace linked to ``an4_slice_tri2`` (its features, lang, mono, tri1 and tri2 outputs) after the
    real ``tri3`` stage with ``TRI3_SLICE`` (2 jobs, no decoding): ``exp/an4/tri3`` and ``exp/an4/tri3_ali``.
    Returns the Workspace; read-only, shared by the session."""
    ws = linked_tri1_workspace(an4_slice_tri2, tmp_path_factory.mktemp("an4_slice_tri3"),
                               exp_dirs=("mono", "tri1", "tri1_ali", "tri2", "tri2_ali"))
    run_stage("tri3", ws, tri3_stage, nj=2, **TRI3_SLICE)
    return ws
