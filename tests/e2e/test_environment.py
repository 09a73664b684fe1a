"""The environment a results section shows is the one its runs were scored in."""

from weakalign.e2e.environment import environment, environment_markdown, recorded_environment, runs_environment


def test_a_scored_runs_environment_block_reads_back_as_written(tmp_path):
    env = environment("cpu")
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# RESULTS: run (an4)\n\n## Environment\n{environment_markdown(env)}\n\n## Decoding\n- model: `x`\n")
    assert recorded_environment(md) == {k: str(v) for k, v in env.items()}
    assert recorded_environment(tmp_path / "missing.md") is None
    md.write_text("# RESULTS\n\n## Decoding\n- model: `x`\n")
    assert recorded_environment(md) is None


def test_runs_that_disagree_show_the_span_of_their_commit_dates_in_time_order():
    merged = runs_environment([{"git_commit_date": "Wed Nov 25 08:20:49 2026 +0000", "device": "cpu (1 threads)"},
                               {"git_commit_date": "Mon Nov 30 21:27:37 2026 +0000", "device": "cpu (2 threads)"}])
    assert merged == {"git_commit_date": "Wed Nov 25 08:20:49 2026 +0000 ... Mon Nov 30 21:27:37 2026 +0000",
                      "device": "cpu (1 threads) / cpu (2 threads)"}
