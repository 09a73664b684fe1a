"""The sweep: grid expansion, resumption, aggregation (injected runner), and a real tiny grid."""

import json
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


def test_sweep_resumes_and_aggregates_with_an_injected_runner(tmp_path):
    """The runner is injected here (it writes a results.json whose WER is a known function of the
    point) to test resumption, failures and aggregation; the real runner is tested below."""
    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    calls = []

    def runner(ws, point, settings, log_path):
        calls.append(point.name)
        if point.overrides["aux_smoothing"] == 0.7 and point.overrides["aux_layer"] == 3 and point.seed == 2:
            raise RuntimeError("simulated crash")
        wer = 10 + 10 * abs(point.overrides["aux_smoothing"] - 0.5) + point.overrides["aux_layer"] + point.seed
        write_json(ws.exp / "e2e" / point.name / "results.json", {"test": {"wer": wer}})

    grid = parse_grid(["m=0.3,0.5,0.7", "layer=2,3"])
    settings = SweepSettings(base="aux_ls0.5_l3")
    first = run_sweep(ws, grid, [1, 2], settings, jobs=2, runner=runner)
    assert len(calls) == 12 and first["ran"] == 12
    assert list(first["failed"]) == ["sweep_aux_ls0.5_l3_m0.7_l3_seed2"]
    rows = {(r["aux_smoothing"], r["aux_layer"]): r for r in first["rows"]}
    assert rows[(0.5, 2)]["wer"] == 13.5 and rows[(0.5, 2)]["wer_std"] == pytest.approx(0.71, abs=0.01)
    assert rows[(0.7, 3)]["seeds"] == 1 and rows[(0.7, 3)]["missing"] == ["sweep_aux_ls0.5_l3_m0.7_l3_seed2"]
    # Rerun: only the failed point runs again.
    calls.clear()
    second = run_sweep(ws, grid, [1, 2], settings, jobs=1, runner=runner)
    assert calls == ["sweep_aux_ls0.5_l3_m0.7_l3_seed2"] and second["ran"] == 1
    out = ws.exp / "sweep" / "aux_ls0.5_l3"
    assert (out / "wer_vs_m_test.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "wer_vs_l_test.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(Path(p).name for p in second["pngs"]) == ["wer_vs_l_test.png", "wer_vs_m_test.png"]
    table = (out / "sweep_test.md").read_text()
    assert "| aux_smoothing | aux_layer | test WER (%) | seeds |" in table and "| 0.5 | 2 | 13.50 ± 0.71 | 2 |" in table
    assert json.loads((out / "grid.json").read_text())["seeds"] == [1, 2]


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


def test_cli_reports_a_set_and_overrides_config_keys():
    """`--report-set` (which split the table and plots show) and `--set KEY=VALUE` (a config override)
    are separate options: a sweep's command line reaches both."""
    from weakalign.e2e.commands import sweep

    ctx = sweep.make_context("sweep", ["an4", "--grid", "m=0.3,0.5", "--report-set", "dev",
                                       "--set", "epochs=3", "--set", "ctc_weight=0.5"])
    assert ctx.params["split"] == "dev"
    assert ctx.params["fixed"] == ("epochs=3", "ctc_weight=0.5")
