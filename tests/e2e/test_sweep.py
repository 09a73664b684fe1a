"""The sweep: grid expansion, resumption, aggregation (injected runner), and a real tiny grid."""

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from weakalign.e2e.scoring import split_results
from weakalign.e2e.sweep import SweepSettings, expand_grid, parse_grid, run_sweep
from weakalign.pipeline.io import write_json
from weakalign.pipeline.workspace import Workspace


def test_grid_expansion_names_and_values():
    grid = parse_grid(["m=0.3,0.5,0.7", "layer=2,3", "aux_weight=1.0"])
    assert grid == {"aux_smoothing": [0.3, 0.5, 0.7], "aux_layer": [2, 3], "aux_weight": [1.0]}
    points = expand_grid("aux_ls0.5_l3", grid, [1, 2])
    assert len(points) == 12 and len({p.name for p in points}) == 12
    assert points[0].name == "sweep_aux_ls0.5_l3_m0.3_l2_w1.0_seed1"
    assert points[0].overrides == {"aux_smoothing": 0.3, "aux_layer": 2, "aux_weight": 1.0}
    assert points[0].group == points[1].group != points[2].group
    with pytest.raises(ValueError, match="KEY=V1"):
        parse_grid(["m"])


def injected_runner(ws, point, settings, log_path):
    """A stand-in for the real runner (tested below): it writes a results.json whose WER is a known
    function of the point, fails one point, and notes in the point's log which process ran it and
    when. Module-level: Dask workers import it by name."""
    start = time.time()
    time.sleep(0.2)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"{os.getpid()} {start} {time.time()}\n")
    if point.overrides["aux_smoothing"] == 0.7 and point.overrides["aux_layer"] == 3 and point.seed == 2:
        raise RuntimeError("simulated crash")
    wer = 10 + 10 * abs(point.overrides["aux_smoothing"] - 0.5) + point.overrides["aux_layer"] + point.seed
    write_json(ws.exp / "e2e" / point.name / "results.json", {"test": {"wer": wer}})


def runs_of(ws) -> dict[str, list[tuple[int, float, float]]]:
    """``{point: [(pid, start, end), ...]}`` of every run of :func:`injected_runner` so far."""
    logs = sorted((ws.exp / "sweep" / "aux_ls0.5_l3" / "log").glob("*.log"))
    return {log.stem: [(int(pid), float(a), float(b)) for pid, a, b in map(str.split, log.read_text().splitlines())]
            for log in logs}


CRASHING = "sweep_aux_ls0.5_l3_m0.7_l3_seed2"


def test_sweep_resumes_and_aggregates_with_an_injected_runner(tmp_path):
    """Resumption, failures and aggregation, with 2 points at a time on the embedded local Dask
    cluster (2 worker processes), then the failed point again in this process (``jobs=1``)."""
    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    grid = parse_grid(["m=0.3,0.5,0.7", "layer=2,3"])
    settings = SweepSettings(base="aux_ls0.5_l3")
    first = run_sweep(ws, grid, [1, 2], settings, jobs=2, runner=injected_runner)
    runs = runs_of(ws)
    assert len(runs) == 12 and first["ran"] == 12 and all(len(r) == 1 for r in runs.values())
    pids = {pid for r in runs.values() for pid, _, _ in r}
    assert len(pids) == 2 and os.getpid() not in pids, "the points ran in 2 Dask workers"
    assert list(first["failed"]) == [CRASHING] and "simulated crash" in first["failed"][CRASHING]
    rows = {(r["aux_smoothing"], r["aux_layer"]): r for r in first["rows"]}
    assert rows[(0.5, 2)]["wer"] == 13.5 and rows[(0.5, 2)]["wer_std"] == pytest.approx(0.71, abs=0.01)
    assert rows[(0.7, 3)]["seeds"] == 1 and rows[(0.7, 3)]["missing"] == [CRASHING]
    # Rerun: only the failed point runs again, here in this process.
    second = run_sweep(ws, grid, [1, 2], settings, jobs=1, runner=injected_runner)
    again = {name: r[1:] for name, r in runs_of(ws).items() if len(r) > 1}
    assert list(again) == [CRASHING] and again[CRASHING][0][0] == os.getpid() and second["ran"] == 1
    out = ws.exp / "sweep" / "aux_ls0.5_l3"
    assert (out / "wer_vs_m_test.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "wer_vs_l_test.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(Path(p).name for p in second["pngs"]) == ["wer_vs_l_test.png", "wer_vs_m_test.png"]
    table = (out / "sweep_test.md").read_text()
    assert "| aux_smoothing | aux_layer | test WER (%) | seeds |" in table and "| 0.5 | 2 | 13.50 ± 0.71 | 2 |" in table
    assert json.loads((out / "grid.json").read_text())["seeds"] == [1, 2]


def test_sweep_points_run_on_a_cluster_jobs_at_a_time(external_scheduler, tmp_path):
    """``cluster``: the points run on the external scheduler's 2 workers, but never more than
    ``jobs=1`` at a time; the failing point is named; a rerun there runs only it."""
    from distributed import Client

    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    grid = parse_grid(["m=0.5,0.7", "layer=3"])
    settings = SweepSettings(base="aux_ls0.5_l3")
    with Client(external_scheduler, set_as_default=False) as client:
        workers = set(client.run(os.getpid).values())
    first = run_sweep(ws, grid, [1, 2], settings, jobs=1, runner=injected_runner, cluster=external_scheduler)
    assert first["ran"] == 4 and list(first["failed"]) == [CRASHING]
    runs = sorted((r[0] for r in runs_of(ws).values()), key=lambda run: run[1])  # by start
    assert {pid for pid, _, _ in runs} <= workers
    assert all(end <= next_start for (_, _, end), (_, next_start, _) in zip(runs, runs[1:])), f"overlap: {runs}"
    second = run_sweep(ws, grid, [1, 2], settings, jobs=2, runner=injected_runner, cluster=external_scheduler)
    assert second["ran"] == 1 and list(second["failed"]) == [CRASHING]
    assert [name for name, r in runs_of(ws).items() if len(r) == 2] == [CRASHING]
    assert [r["seeds"] for r in second["rows"]] == [2, 1]


def test_real_tiny_grid_trains_and_scores(an4_slice, tmp_path):
    """One point through the real runner: `weakalign train` (1 epoch of 2 steps, tiny model) and
    `weakalign score` (greedy) as subprocesses. (Several at a time is tested with the injected runner.)"""
    ws = Workspace("an4", data_root=an4_slice.data_root, exp_root=tmp_path / "exp")
    tiny = {"enc_hidden": 8, "enc_proj": 8, "dec_hidden": 8, "dec_embed": 8, "dec_heads": 2, "conv_channels": 2,
            "enc_layers": 2, "aux_layer": 1, "vocab_size": 30}
    settings = SweepSettings(base="baseline", decode="greedy", fixed=tiny,
                             train_args=["--epochs", "1", "--max-steps-per-epoch", "2"])
    result = run_sweep(ws, parse_grid(["ctc_weight=0.5"]), None, settings, jobs=1)
    assert result["failed"] == {}, result["failed"]
    for name in ("sweep_baseline_ctc_weight0.5",):
        results = json.loads((ws.exp / "e2e" / name / "results.json").read_text())
        assert set(split_results(results)) == {"dev", "test"} and results["test"]["sentences"] == 12
        config = (ws.exp / "e2e" / name / "config.yaml").read_text()
        assert f"ctc_weight: {name[-3:]}" in config
    assert [r["seeds"] for r in result["rows"]] == [1]
    again = run_sweep(ws, parse_grid(["ctc_weight=0.5"]), None, settings, jobs=1)
    assert again["ran"] == 0
    # --force: the finished point is trained and scored again, by the real commands.
    results_json = ws.exp / "e2e" / "sweep_baseline_ctc_weight0.5" / "results.json"
    before = results_json.stat().st_mtime_ns
    forced = run_sweep(ws, parse_grid(["ctc_weight=0.5"]), None, dataclasses.replace(settings, force=True), jobs=1)
    assert forced["ran"] == 1 and forced["failed"] == {} and results_json.stat().st_mtime_ns > before


def test_cli_reports_a_set_and_overrides_config_keys():
    """`--report-set` (which split the table and plots show) and `--set KEY=VALUE` (a config override)
    are separate options: a sweep's command line reaches both."""
    from weakalign.e2e.commands import sweep

    ctx = sweep.make_context("sweep", ["an4", "--grid", "m=0.3,0.5", "--report-set", "dev",
                                       "--set", "epochs=3", "--set", "ctc_weight=0.5"])
    assert ctx.params["split"] == "dev"
    assert ctx.params["fixed"] == ("epochs=3", "ctc_weight=0.5")
    assert sweep.make_context("sweep", ["an4", "--grid", "m=0.3", "--force"]).params["force"] is True


def test_sweep_force_reaches_both_commands_of_a_point(tmp_path):
    from weakalign.e2e.sweep import point_commands

    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    point = expand_grid("baseline", {"ctc_weight": [0.5]}, [1])[0]
    assert all("--force" not in cmd for cmd in point_commands(ws, point, SweepSettings(base="baseline")))
    forced = point_commands(ws, point, SweepSettings(base="baseline", force=True))
    assert [cmd[3] for cmd in forced] == ["train", "score"] and all("--force" in cmd for cmd in forced)


def test_score_and_sweep_commands_take_cluster():
    """``--cluster`` of ``weakalign score`` and ``weakalign sweep`` is the option ``align`` forwards."""
    from weakalign.pipeline.align_options import runtime_args
    from weakalign.pipeline.cli import cli

    address = "tcp://127.0.0.1:8786"
    for command in ("score", "sweep"):
        assert runtime_args(cli.commands[command], 2, address)[-2:] == ["--cluster", address], command
