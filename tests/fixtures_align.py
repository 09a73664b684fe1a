"""Session fixtures that run real stages (see conftest.py)."""

import os
from pathlib import Path

import pytest

from weakalign.align.export import export_stage
from weakalign.pipeline.stage import run_stage
from weakalign.pipeline.workspace import Workspace


@pytest.fixture(scope="session")
def an4_slice_exported(an4_slice_tri1, tmp_path_factory) -> Workspace:
    """The real ``export`` stage (no TextGrids) on ``an4_slice_tri1``'s ``tri1_ali``: a workspace
    whose ``ali_cuts("train")`` / ``ali_cuts("dev")`` are the slice's fbank cuts with the real
    ``senone`` and ``phone`` arrays (``cut.custom["num_senones"]`` = the tri1 pdf count), and so
    is ``ali_cuts("test")`` (tri1 force-aligns test too; one of its 12 utterances fails to align
    with the slice's tiny model and is not exported). It links the slice's manifests, fbank, lang
    and ``tri1_ali`` (the slice workspace stays read-only); read-only itself, shared by the session.
    """
    return exported_workspace(an4_slice_tri1, tmp_path_factory.mktemp("an4_slice_exported"))


def exported_workspace(tri1_ws: Workspace, root) -> Workspace:
    """A workspace under ``root`` linking ``tri1_ws``'s manifests, fbank, lang and ``tri1_ali``,
    exported by the real stage."""
    ws = linked_workspace(tri1_ws, root)
    run_stage("export", ws, export_stage, textgrids=False)
    return ws


def linked_workspace(src: Workspace, root, ali_dirs=("tri1_ali",),
                     data_dirs=("manifests", "fbank", "lang")) -> Workspace:
    """A workspace under ``root`` (absolute, or relative to the working dir) whose ``data/<c>/<d>``
    for each of ``data_dirs`` (default: manifests, fbank and lang) are links to ``src``'s, and
    ``exp/<c>/<d>`` to ``src``'s for each of ``ali_dirs``."""
    ws = Workspace(src.corpus, data_root=Path(root) / "data", exp_root=Path(root) / "exp")
    ws.data.mkdir(parents=True)
    ws.exp.mkdir(parents=True)
    for name in data_dirs:
        os.symlink(src.data / name, ws.data / name)
    for name in ali_dirs:
        os.symlink(src.exp / name, ws.exp / name)
    return ws
