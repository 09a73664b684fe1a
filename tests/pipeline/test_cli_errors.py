"""CLI errors (issue #18, item 5): a failing command prints one ``Error:`` line naming the cause and
the next step and exits 1; the traceback is printed only with ``weakalign --verbose`` and is always
in the stage's log; log lines go through ``tqdm.write`` so they do not pile up with progress bars.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import io
import logging
import shutil
import sys

import pytest
from click.testing import CliRunner
from tqdm import tqdm

from tests.fixtures_align import linked_workspace
from weakalign.pipeline.cli import cli
from weakalign.pipeline.stage import log, marker_path, setup_console_logging
from weakalign.pipeline.workspace import Workspace


@pytest.fixture
def empty(tmp_path, monkeypatch):
    """A workspace with nothing in it, and no corpora where prepare would look by default."""
    monkeypatch.setenv("WEAKALIGN_CORPORA", str(tmp_path / "corpora"))
    return Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")


def run(ws, *args, verbose=False):
    roots = ["--data-root", str(ws.data_root), "--exp-root", str(ws.exp_root)]
    return CliRunner().invoke(cli, (["--verbose"] if verbose else []) + [args[0], ws.corpus, *roots, *args[1:]])


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def assert_one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_missing_corpus_says_where_it_looked_and_how_to_point_elsewhere(empty, tmp_path):
    line = assert_one_line_error(run(empty, "prepare"))
    assert line == (f"Error: corpus an4 not found under {tmp_path / 'corpora'}: set WEAKALIGN_CORPORA to the "
                    "folder that holds an4/, or give --src")
    line = assert_one_line_error(run(empty, "prepare", "--src", str(tmp_path / "nowhere")))
    assert line == f"Error: corpus an4 not found: --src {tmp_path / 'nowhere'} is not a directory"


#: Each stage on an empty workspace, and what its error line must name: the stage(s) to run first.
FIRST_STEPS = {
    "features": "run `weakalign prepare an4 --data-root",
    "lang": "give --lexicon",                     # lang reads the corpus' lexicon (none here), not a stage's output
    "mono": "prepare, features and lang have not run: run `weakalign align an4 --data-root",
    "tri1": "prepare, features, lang and mono have not run: run `weakalign align an4 --data-root",
    "hybrid": "prepare, features, lang, mono and tri1 have not run",
    "export": "run the tri1 or hybrid stage, or pass --ali-dir",
    "export-kaldi": "prepare and features have not run",
    "train": "run `weakalign align an4`",
}


@pytest.mark.parametrize("stage", list(FIRST_STEPS))
def test_every_stage_on_an_empty_workspace_names_what_to_run_first(empty, stage):
    line = assert_one_line_error(run(empty, stage))
    assert FIRST_STEPS[stage] in line, line
    if "--stop-after" in line:   # the last of the missing prerequisites, also as the make target
        last = line.split("--stop-after ")[1].split("`")[0]
        assert f"make align CORPUS=an4 STOP_AFTER={last}" in line


def test_a_stage_whose_one_prerequisite_has_not_run_names_just_that_stage(an4_slice, tmp_path):
    """mono on a prepared slice with features but no lang: run lang (only)."""
    ws = linked_workspace(an4_slice, tmp_path / "ws", data_dirs=("manifests", "mfcc", "fbank"))
    ws.done_dir.mkdir(parents=True)
    for stage in ("prepare", "features"):
        shutil.copy(marker_path(an4_slice, stage), marker_path(ws, stage))
    line = assert_one_line_error(run(ws, "mono"))
    assert line == (f"Error: mono: {ws.lang / 'phones.txt'} not found (written by lang): run `weakalign lang an4 "
                    f"--data-root {ws.data_root} --exp-root {ws.exp_root}` first (or `make align`)")


def test_verbose_prints_the_traceback_and_the_stage_log_always_has_it(empty):
    quiet = run(empty, "tri1")
    assert_one_line_error(quiet)
    logged = (empty.log_dir / "tri1.log").read_text()
    assert "Traceback (most recent call last)" in logged and "FileNotFoundError" in logged
    assert "stage tri1: failed" in logged
    loud = run(empty, "tri1", verbose=True)
    assert loud.exit_code == 1
    assert "Traceback (most recent call last)" in loud.output and "FileNotFoundError" in loud.output
    assert error_lines(loud) == error_lines(quiet)
    assert (empty.log_dir / "tri1.log").read_text().count("Traceback") == 2


def test_an_unexpected_error_is_one_line_with_its_type_and_where_the_traceback_is(empty, monkeypatch):
    def crash(ws, **options):
        raise RuntimeError("the model\nexploded")

    monkeypatch.setattr("weakalign.kaldi_steps.train_mono.mono_stage", crash)
    result = run(empty, "mono")
    line = assert_one_line_error(result)
    log_path = empty.log_dir / "mono.log"
    assert line == f"Error: RuntimeError: the model exploded (full traceback: {log_path}; --verbose to print it)"
    assert 'raise RuntimeError("the model\\nexploded")' in log_path.read_text()
    assert "Traceback" in run(empty, "mono", verbose=True).output


def test_log_lines_clear_a_progress_bar_before_they_are_written(monkeypatch):
    """Through ``tqdm.write``: the bar is wiped (carriage return) before the line, not followed by it."""
    setup_console_logging()
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with tqdm(total=3, desc="work", file=stream, mininterval=0) as bar:
        bar.update(1)
        log.log(logging.WARNING, "between the bars")
        bar.update(1)
    text = stream.getvalue()
    line_start = text.index("between the bars") - len("HH:MM:SS WARNING ")
    assert text[line_start - 1] == "\r", repr(text[:line_start])   # a plain handler writes after the bar's "]"
    assert text.count("between the bars") == 1


@pytest.mark.parametrize("command, dropped", [("ali-info", "--force"), ("ali-info", "--nj"),
                                              ("archive-ali", "--force"), ("archive-ali", "--nj"),
                                              ("bench", "--force"), ("emnet-plot", "--force"),
                                              ("prepare", "--nj"), ("lang", "--nj"), ("export", "--nj"),
                                              ("export-kaldi", "--nj")])
def test_a_command_refuses_a_shared_option_it_would_ignore(command, dropped):
    """No command takes an option that changes nothing: ``archive-ali --force`` is a usage error,
    not a silently ignored flag."""
    args = [command, "an4", dropped] + (["2"] if dropped == "--nj" else [])
    result = CliRunner().invoke(cli, args + (["RUN"] if command == "emnet-plot" else []))
    assert result.exit_code == 2 and f"No such option '{dropped}'" in result.output, result.output
