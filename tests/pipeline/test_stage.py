import json

import pytest

from weakalign.pipeline.io import atomic_open
from weakalign.pipeline.recipe import select_stages
from weakalign.pipeline.stage import marker_path, run_stage
from weakalign.pipeline.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace("toy", data_root=tmp_path / "data", exp_root=tmp_path / "exp")


def test_stage_runs_once_logs_and_redoes_with_force(ws):
    calls = []

    def make_file(ws):
        calls.append(1)
        out = ws.data / "out.txt"
        with atomic_open(out) as f:
            f.write("x")
        return {"outputs": [out]}

    run_stage("make", ws, make_file)
    run_stage("make", ws, make_file)
    assert len(calls) == 1
    assert "stage make: done in" in (ws.log_dir / "make.log").read_text()
    assert json.loads(marker_path(ws, "make").read_text())["stage"] == "make"
    run_stage("make", ws, make_file, force=True)
    assert len(calls) == 2


def test_stage_with_missing_output_is_redone(ws):
    calls = []

    def make_file(ws):
        calls.append(1)
        out = ws.data / "out.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("x")
        return {"outputs": [out]}

    run_stage("make", ws, make_file)
    (ws.data / "out.txt").unlink()
    run_stage("make", ws, make_file)
    assert len(calls) == 2


def test_crashed_stage_leaves_no_marker_and_no_partial_file(ws):
    def crash(ws):
        with atomic_open(ws.data / "out.txt") as f:
            f.write("half")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage("crash", ws, crash)
    assert not marker_path(ws, "crash").exists()
    assert not (ws.data / "out.txt").exists()
    assert list(ws.data.iterdir()) == []


def test_select_stages_rejects_unknown_and_inverted_ranges():
    with pytest.raises(ValueError, match="unknown stage"):
        select_stages("nope", None)
    with pytest.raises(ValueError, match="comes after"):
        select_stages("features", "prepare")


def test_redoing_a_recipe_stage_makes_later_stages_stale(ws):
    def noop(ws):
        return {}

    run_stage("prepare", ws, noop)
    run_stage("features", ws, noop)
    assert marker_path(ws, "features").exists()
    run_stage("prepare", ws, noop, force=True)
    assert not marker_path(ws, "features").exists()
    assert marker_path(ws, "prepare").exists()
