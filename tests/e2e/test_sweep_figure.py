"""The sweep figures `make results` draws from published runs (tables.yaml ``figure`` entries)."""

import statistics

import pytest
from click.testing import CliRunner

from weakalign.e2e.sweep_figure import FigureSpec, build_figure, read_figure_specs
from weakalign.pipeline.io import read_json

from .test_compare import OTHER_DIGEST, make_run, training

FIGURE = """
- section: an4
  runs: [baseline_seed*, aux_m0.5_seed*]
- figure: wer_vs_m
  title: "WER vs m"
  axis: m
  points:
    0.5: aux_m0.5_seed*
    0: [onehot_w1.0_seed1]
  reference: baseline_seed*
"""


@pytest.fixture
def published(tmp_path):
    root = tmp_path / "results" / "an4"
    for seed in (1, 2):
        make_run(root, f"baseline_seed{seed}", 0.5, seed, training(seed))
        make_run(root, f"aux_m0.5_seed{seed}", 0.2 + 0.1 * seed, seed, training(seed))
    make_run(root, "onehot_w1.0_seed1", 0.4, 1, training(1))
    (root / "tables.yaml").write_text(FIGURE)
    return root


def _wer(root, run, split):
    return read_json(root / run / "results.json")[split]["wer"]


def test_figure_rows_are_the_runs_mean_and_std_in_axis_order(published, tmp_path):
    spec, = read_figure_specs(published)
    assert list(spec.points) == [0.0, 0.5] and spec.reference == ["baseline_seed*"]
    text = build_figure(published, spec, tmp_path / "RESULTS.md")
    assert (published / "wer_vs_m.png").read_bytes()[:4] == b"\x89PNG"
    assert "![wer_vs_m](results/an4/wer_vs_m.png)" in text
    dev = [_wer(published, f"aux_m0.5_seed{s}", "dev") for s in (1, 2)]
    test = [_wer(published, f"aux_m0.5_seed{s}", "test") for s in (1, 2)]
    row = next(line for line in text.splitlines() if line.startswith("| 0.5 |"))
    assert row.startswith(f"| 0.5 | 2 | {statistics.mean(dev):.2f} ± {statistics.stdev(dev):.2f} | "
                          f"{statistics.mean(test):.2f} ± {statistics.stdev(test):.2f} |")
    one = next(line for line in text.splitlines() if line.startswith("| 0 |"))
    assert one.startswith(f"| 0 | 1 | {_wer(published, 'onehot_w1.0_seed1', 'dev'):.2f} | ")   # one seed: no ± std
    assert text.index("| 0 |") < text.index("| 0.5 |") < text.index("| no aux loss | 2 |")
    assert "fewer than 3 runs" in text


def test_make_results_draws_the_figures_and_refuses_mixed_alignment_sets(published, tmp_path):
    from weakalign.pipeline.cli import cli

    args = ["results-table", "an4", "--from-results", "--results-root", str(tmp_path / "results"), "--group",
            "--out", str(tmp_path / "RESULTS.md")]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## an4\n" in text and "## WER vs m" in text and (published / "wer_vs_m.png").exists()
    make_run(published, "onehot_w1.0_seed2", 0.4, 2, training(2, digest=OTHER_DIGEST))
    (published / "tables.yaml").write_text(FIGURE.replace("[onehot_w1.0_seed1]", "onehot_w1.0_seed*"))
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "different alignment sets" in refused.output


def test_a_figure_needs_an_axis_and_points():
    with pytest.raises(ValueError, match="needs 'axis'"):
        FigureSpec.from_entry({"figure": "x", "points": {}})


def test_a_split_no_run_has_scored_gets_no_panel_or_column(published, tmp_path):
    """speechocean762 scores dev only until its test half is added: the figure is dev's alone."""
    from weakalign.pipeline.io import write_json

    for run in published.iterdir():
        if (run / "results.json").exists():
            results = read_json(run / "results.json")
            results.pop("test")
            write_json(run / "results.json", results)
    spec, = read_figure_specs(published)
    text = build_figure(published, spec, tmp_path / "RESULTS.md")
    assert "| m | n | dev WER (%) | runs |" in text and "test WER" not in text
