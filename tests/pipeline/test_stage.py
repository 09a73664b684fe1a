import json
from pathlib import Path

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


def test_the_marker_names_the_code_that_ran_and_new_code_alone_redoes_nothing(ws):
    """Provenance, not identity: the marker records weakalign's version and this checkout's commit;
    a marker written by other code is still "already done" for the same request."""
    import subprocess

    calls = []
    run_stage("make", ws, lambda ws: calls.append(1) or {})
    marker = marker_path(ws, "make")
    code = json.loads(marker.read_text())["code"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert code["git_hash"].removesuffix("-dirty") == head and code["weakalign"] != "not installed"
    older = {**json.loads(marker.read_text()), "code": {"weakalign": "0.0.1", "git_hash": "0" * 40}}
    marker.write_text(json.dumps(older))
    run_stage("make", ws, lambda ws: calls.append(1) or {})
    assert calls == [1]


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


def test_checkpoints_of_two_identical_saves_are_byte_identical(tmp_path, monkeypatch):
    # Each save runs under another pid, so under another temporary name (.tmp<pid>.epoch-1.pt).
    import torch

    from weakalign.e2e.checkpoints import save_checkpoint
    from weakalign.pipeline import io

    state = {"epoch": 1, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"lr": 1e-3}}
    for pid, run in ((1111, "a"), (2222, "b")):
        monkeypatch.setattr(io.os, "getpid", lambda pid=pid: pid)
        save_checkpoint(tmp_path / run / "epoch-1.pt", **state)
    a, b = ((tmp_path / run / "epoch-1.pt").read_bytes() for run in ("a", "b"))
    assert b".tmp" not in a
    assert a == b
    assert torch.load(tmp_path / "a" / "epoch-1.pt", weights_only=False)["model"]["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


def _make_unwritable(directory):
    """Read-only for everyone, root included (chmod binds root only through the immutable flag);
    returns how to undo it, or skips when this file system allows neither."""
    import os
    import subprocess

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(directory)],
                                                     capture_output=True).returncode == 0

    def undo():
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)

    try:
        (directory / ".probe").touch()
    except OSError:
        return undo
    (directory / ".probe").unlink()
    undo()
    pytest.skip("cannot make a directory read-only here")


@pytest.mark.parametrize("root", ["data", "exp"])
def test_unwritable_output_dir_fails_before_the_stage_with_one_line(ws, root):
    from weakalign.pipeline.stage import UnwritableOutput

    calls = []
    directory = ws.data if root == "data" else ws.exp
    undo = _make_unwritable(directory)
    try:
        with pytest.raises(UnwritableOutput) as e:
            run_stage("prepare", ws, lambda ws: calls.append(1) or {})
    finally:
        undo()
    assert calls == []
    message = str(e.value)
    assert "\n" not in message and str(directory) in message and f"--{root}-root" in message
    assert "prepare: cannot write to" in message
    # A stage that writes nothing under data/<c> is not stopped by a read-only data/<c>.
    if root == "data":
        undo = _make_unwritable(ws.data)
        try:
            assert run_stage("mono", ws, lambda ws: {"ok": 1})["ok"] == 1
        finally:
            undo()


def test_unwritable_output_dir_is_one_error_line_from_the_cli(tmp_path):
    from click.testing import CliRunner

    from weakalign.pipeline.cli import cli

    exp = tmp_path / "exp" / "toy"
    undo = _make_unwritable(exp)
    try:
        r = CliRunner().invoke(cli, ["features", "toy", "--data-root", str(tmp_path / "data"),
                                     "--exp-root", str(tmp_path / "exp")])
    finally:
        undo()
    assert r.exit_code == 1, r.output
    assert r.output.startswith(f"Error: features: cannot write to {exp} (")   # denied, or not permitted
    assert r.output.endswith("); make it writable or give another --exp-root\n")
    assert len(r.output.splitlines()) == 1


def test_atomic_dir_swaps_whole_trees_and_keeps_the_old_one_on_failure(tmp_path):
    from weakalign.pipeline.io import atomic_dir

    target = tmp_path / "grids"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            assert sorted(p.name for p in target.iterdir()) == ["old.txt"]   # readers see the old tree
            raise RuntimeError("killed half way")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grids"]        # no staging or old tree left
    with atomic_dir(tmp_path / "fresh") as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "fresh" / "a.txt").read_text() == "a"
