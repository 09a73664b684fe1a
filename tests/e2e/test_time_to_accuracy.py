"""Time to accuracy (first crossing of dev WER targets, per seed group, ratio to baseline),
its bench entry, and the learning-curves plot across seeds, on hand-made metrics rows and run dirs."""

import json

import pytest
from click.testing import CliRunner

from weakalign.e2e.time_to_accuracy import (first_crossings, resolve_run_groups, summarize_groups, summarize_run,
                                            time_to_accuracy)
from weakalign.pipeline.bench import run_benchmarks
from weakalign.pipeline.io import read_json
from weakalign.pipeline.workspace import Workspace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rows_from(wers, updates_per_epoch=100, time_per_epoch=10.0, ctc=None):
    """Metrics rows the way train.py writes them: cumulative updates, per-epoch time_s."""
    rows = []
    for i, wer in enumerate(wers, 1):
        dev = {"loss": 1.0 / i, "loss_ctc": ctc[i - 1] if ctc else 2.0 / i, "loss_att": 1.0 / i, "loss_aux": None,
               "acc": 0.5, "aux_acc": None, "wer": wer, "cer": wer}
        rows.append({"epoch": i, "train": {"loss": 1.0 / i, "loss_ctc": 2.0 / i}, "dev": dev, "lr": 1e-3,
                     "updates": i * updates_per_epoch, "time_s": time_per_epoch, "train_frames": 1000})
    return rows


def write_run(root, name, rows, threads=2, seed=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = {"config_name": name.split("_seed")[0], "seed": seed or 1, "threads": threads,
              "updates": rows[-1]["updates"], "epochs_run": rows[-1]["epoch"], "stopped_early": False,
              "stopping": {"rule": "early_stopping"}, "selection": {"criterion": "dev_cer_greedy"},
              "alignment_digest": None}
    (d / "training.json").write_text(json.dumps(record))
    return d


# ---------------------------------------------------------------- the pure function

def test_first_crossing_known_answers():
    rows = [
        {"epoch": 1, "dev": {"wer": 98.0}, "updates": 50, "time_s": 30.0},
        {"epoch": 2, "dev": {"wer": 45.0}, "updates": 100, "time_s": 31.0},
        {"epoch": 3, "dev": {"wer": 55.0}, "updates": 150, "time_s": 29.5},   # back above 50: no new crossing
        {"epoch": 4, "dev": None, "updates": 200, "time_s": 12.0},              # no validation: time still counts
        {"epoch": 5, "dev": {"wer": 30.0}, "updates": 250, "time_s": 30.25},    # exactly on the target counts
        {"epoch": 6, "dev": {"wer": 19.5}, "updates": 300, "time_s": 30.0},
    ]
    got = first_crossings(rows, targets=(50, 30, 20, 15))
    assert got["50"] == {"epoch": 2, "updates": 100, "time_s": 61.0}
    assert got["30"] == {"epoch": 5, "updates": 250, "time_s": 132.75}
    assert got["20"] == {"epoch": 6, "updates": 300, "time_s": 162.75}
    assert got["15"] is None
    # a single row below several targets crosses all of them at once
    assert first_crossings(rows[-1:], targets=(50, 20)) == {"50": {"epoch": 6, "updates": 300, "time_s": 30.0},
                                                            "20": {"epoch": 6, "updates": 300, "time_s": 30.0}}
    assert first_crossings([], targets=(50,)) == {"50": None}


def test_summarize_run_takes_threads_and_epochs_from_training_record():
    rows = rows_from([90, 40, 25])
    s = summarize_run("aux_ls0.5_l3_seed3", rows, {"threads": 4, "epochs_run": 3, "updates": 300}, targets=(30,))
    assert (s["group"], s["threads"], s["epochs_run"], s["time_s"], s["best_dev_wer"]) == \
        ("aux_ls0.5_l3", 4, 3, 30.0, 25)
    assert s["targets"]["30"] == {"epoch": 3, "updates": 300, "time_s": 30.0}
    unfinished = summarize_run("baseline", rows[:2], None, targets=(30,))
    assert unfinished["finished"] is False and unfinished["epochs_run"] == 2 and unfinished["threads"] is None


def test_grouping_by_seed_and_ratio_to_baseline():
    targets = (50, 20, 10)
    runs = [summarize_run(name, rows_from(wers, updates_per_epoch=u, time_per_epoch=t), {"threads": 2},
                          targets, seed=int(name[-1]))
            for name, wers, u, t in [
                ("baseline_seed1", [80, 45, 30, 18], 100, 10.0),     # 50: 200 upd/20 s; 20: 400/40
                ("baseline_seed2", [60, 48, 22, 19], 100, 12.0),     # 50: 200/24;       20: 400/48
                ("aux_ls0.5_l3_seed1", [49, 20, 15], 110, 11.0),     # 50: 110/11;       20: 220/22
                ("aux_ls0.5_l3_seed2", [70, 40, 25], 110, 11.0),     # 50: 220/22;       20: never
            ]]
    out = summarize_groups(runs, targets)
    assert list(out["groups"]) == ["baseline", "aux_ls0.5_l3"]
    base, aux = out["groups"]["baseline"], out["groups"]["aux_ls0.5_l3"]
    assert base["runs"] == ["baseline_seed1", "baseline_seed2"] and base["seeds"] == [1, 2]
    assert base["targets"]["50"]["updates_mean"] == 200 and base["targets"]["50"]["time_s_mean"] == 22.0
    assert base["targets"]["20"]["updates_mean"] == 400 and base["targets"]["20"]["time_s_mean"] == 44.0
    assert aux["targets"]["50"]["updates_mean"] == 165 and aux["targets"]["50"]["reached"] == 2
    assert aux["targets"]["20"] == {"reached": 1, "n": 2, "updates_mean": 220, "time_s_mean": 22.0,
                                    "updates": [220, None], "time_s": [22.0, None]}
    assert base["targets"]["10"]["updates_mean"] is None and base["targets"]["10"]["reached"] == 0
    ratio = out["ratio_to_baseline"]["aux_ls0.5_l3"]
    assert ratio["50"]["updates_ratio"] == pytest.approx(165 / 200, abs=1e-3)
    assert ratio["50"]["time_ratio"] == pytest.approx(16.5 / 22, abs=1e-3)
    assert ratio["20"]["updates_ratio"] == pytest.approx(220 / 400, abs=1e-3) and ratio["20"]["reached"] == "1/2"
    assert "10" not in ratio                                             # neither reached 10%
    assert "baseline" not in out["ratio_to_baseline"]


def test_no_baseline_group_means_no_ratios():
    runs = [summarize_run("aux_seed1", rows_from([40]), None, (50,))]
    assert summarize_groups(runs, (50,))["ratio_to_baseline"] == {}


# ---------------------------------------------------------------- I/O, bench, CLI

def test_time_to_accuracy_reads_run_dirs_and_prefers_exp_over_published_copy(tmp_path):
    exp_runs, published = tmp_path / "exp" / "an4" / "e2e", tmp_path / "results" / "an4"
    write_run(exp_runs, "baseline_seed1", rows_from([70, 40]), threads=2, seed=1)
    write_run(published, "baseline_seed1", rows_from([70, 60, 40]), threads=8, seed=1)   # stale copy
    write_run(published, "baseline_seed2", rows_from([45]), threads=1, seed=2)
    (exp_runs / "not_a_run").mkdir()
    result = time_to_accuracy([exp_runs, published], targets=(50,))
    by_run = {r["run"]: r for r in result["runs"]}
    assert sorted(by_run) == ["baseline_seed1", "baseline_seed2"]
    assert by_run["baseline_seed1"]["threads"] == 2 and by_run["baseline_seed1"]["source"] == str(exp_runs)
    assert by_run["baseline_seed1"]["targets"]["50"]["updates"] == 200
    assert result["groups"]["baseline"]["targets"]["50"]["updates_mean"] == 150
    assert result["groups"]["baseline"]["threads"] == [1, 2]
    assert "note" not in result


def test_bench_writes_time_to_accuracy_json(tmp_path):
    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    write_run(ws.exp / "e2e", "baseline", rows_from([60, 25]), threads=2)
    write_run(ws.exp / "e2e", "aux_ls0.5_l3", rows_from([28, 15]), threads=2)
    [path] = run_benchmarks(ws, 1, only=("time_to_accuracy",))
    assert path == tmp_path / "exp" / "bench" / "time_to_accuracy.json"
    result = read_json(path)
    assert result["benchmark"] == "time_to_accuracy" and result["corpus"] == "an4"
    assert "cpu_count" in result["machine"]
    assert result["ratio_to_baseline"]["aux_ls0.5_l3"]["30"]["updates_ratio"] == 0.5
    assert result["groups"]["baseline"]["targets"]["10"]["reached"] == 0


def test_bench_with_no_runs_writes_an_empty_result_with_a_note(tmp_path):
    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")   # exp/ does not even exist
    [path] = run_benchmarks(ws, 1, only=("time_to_accuracy",), results_root=tmp_path / "results")
    result = read_json(path)
    assert result["runs"] == [] and result["groups"] == {} and result["ratio_to_baseline"] == {}
    assert "no run dir" in result["note"] and str(tmp_path / "results" / "an4") in result["note"]


def test_time_to_accuracy_cli_prints_a_markdown_table(tmp_path):
    from weakalign.pipeline.cli import cli

    root = tmp_path / "results" / "an4"
    write_run(root, "baseline_seed1", rows_from([60, 25, 18]), seed=1)
    write_run(root, "baseline_seed2", rows_from([55, 35, 19]), seed=2)
    write_run(root, "aux_ls0.5_l3_seed1", rows_from([40, 19]), seed=1)
    out = CliRunner().invoke(cli, ["time-to-accuracy", "an4", "--from-results", "--results-root",
                                   str(tmp_path / "results"), "--target", "20", "--target", "10"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "| system | n | threads | epochs | WER ≤ 20% | WER ≤ 10% |" in lines
    assert "| baseline | 2 | 2 | 3 | 300 / 0.5 min | — |" in lines
    assert "| aux_ls0.5_l3 | 1 | 2 | 2 | 200 / 0.3 min | — |" in lines
    assert "| aux_ls0.5_l3 | 0.67 [0.67] | — |" in lines
    empty = CliRunner().invoke(cli, ["time-to-accuracy", "an4", "--exp-root", str(tmp_path / "exp")])
    assert empty.exit_code != 0 and "no run dir" in empty.output


# ---------------------------------------------------------------- learning curves

def test_resolve_run_groups_groups_seeds_and_rejects_unknown(tmp_path):
    for name in ("baseline_seed1", "baseline_seed2", "aux_ls0.5_l3_seed1"):
        write_run(tmp_path, name, rows_from([50, 30]))
    groups = resolve_run_groups(tmp_path, ["aux*", "baseline_seed*", "baseline_seed1"])
    assert list(groups) == ["aux_ls0.5_l3", "baseline"]
    assert [d.name for d in groups["baseline"]] == ["baseline_seed1", "baseline_seed2"]
    with pytest.raises(FileNotFoundError, match="ctc_only"):
        resolve_run_groups(tmp_path, ["ctc_only"])


@pytest.mark.parametrize("from_results", [False, True])
def test_curves_command_writes_a_png(tmp_path, from_results):
    from weakalign.pipeline.cli import cli

    root = tmp_path / "results" / "an4" if from_results else tmp_path / "exp" / "an4" / "e2e"
    write_run(root, "baseline_seed1", rows_from([95, 60, 35], ctc=[3.0, 2.0, 1.5]), seed=1)
    write_run(root, "aux_ls0.5_l3_seed1", rows_from([90, 50, 25], updates_per_epoch=90), seed=1)
    args = ["curves", "an4", "baseline_seed*", "aux_ls0.5_l3_seed*",
            "--exp-root", str(tmp_path / "exp"), "--results-root", str(tmp_path / "results")]
    out = CliRunner().invoke(cli, args + (["--from-results"] if from_results else []))
    assert out.exit_code == 0, out.output
    png = root / "curves_dev.png"
    assert out.output.strip() == str(png)
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert not list(root.glob(".tmp*"))                                   # written atomically, nothing left over
    custom = tmp_path / "elsewhere" / "c.png"
    assert CliRunner().invoke(cli, args + ["--out", str(custom)] + (["--from-results"] if from_results else [])
                              ).exit_code == 0 and custom.stat().st_size > 0
    missing = CliRunner().invoke(cli, ["curves", "an4", "nope*", "--exp-root", str(tmp_path / "exp"),
                                       "--results-root", str(tmp_path / "results")]
                                 + (["--from-results"] if from_results else []))
    assert missing.exit_code != 0 and "no run" in missing.output
