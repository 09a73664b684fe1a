"""Stage commands and ``weakalign align`` pass on what the user asked for (issue #19, item 1).

The stage functions are stand-ins that record the options they got, so these tests check
the commands' side only -- what counts as given, what ``align`` forwards, what a rerun
reuses -- in milliseconds; the real stages' option changes are tested on real data in
test_stage_options_real.py and tests/align/test_export.py.
"""

import json

import pytest
from click.testing import CliRunner

from weakalign.pipeline.cli import cli
from weakalign.pipeline.options import options_path
from weakalign.pipeline.recipe import ALIGN_STAGES
from weakalign.pipeline.stage import is_done, marker_path, setup_console_logging
from weakalign.pipeline.workspace import Workspace

setup_console_logging()  # before the first test, so that caplog sees the stage logger (see test_stage_options)

#: Where each stage command imports its stage function from, at call time.
STAGE_FUNCTIONS = {
    "prepare": "weakalign.pipeline.corpora.prepare",
    "features": "weakalign.pipeline.features.compute_features",
    "lang": "weakalign.kaldi_steps.lang.lang_stage",
    "mono": "weakalign.kaldi_steps.train_mono.mono_stage",
    "tri1": "weakalign.kaldi_steps.train_deltas.tri1_stage",
    "tri2": "weakalign.kaldi_steps.train_lda_mllt.tri2_stage",
    "tri3": "weakalign.kaldi_steps.train_sat.tri3_stage",
    "hybrid": "weakalign.kaldi_steps.hybrid.stage.hybrid_stage",
    "export": "weakalign.align.export.export_stage",
}


@pytest.fixture
def calls(monkeypatch):
    """``{stage: [options of each call]}`` of stand-ins for every alignment stage (opt-in tri2 too)."""
    calls = {name: [] for name in STAGE_FUNCTIONS}

    def stand_in(name):
        def stage(ws, **options):
            calls[name].append(options)
            return {}
        return stage

    for name, target in STAGE_FUNCTIONS.items():
        monkeypatch.setattr(target, stand_in(name))
    return calls


@pytest.fixture
def weakalign(tmp_path):
    roots = ["--data-root", str(tmp_path / "data"), "--exp-root", str(tmp_path / "exp")]

    def run(command, *args):
        result = CliRunner().invoke(cli, [command, "an4", *roots, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    run.ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    return run


def test_a_stage_command_requests_only_what_was_typed(calls, weakalign, caplog):
    weakalign("tri1", "--num-leaves", "500")
    assert calls["tri1"][-1]["num_leaves"] == 500 and calls["tri1"][-1]["thresh"] == 300.0
    marker = json.loads(marker_path(weakalign.ws, "tri1").read_text())
    assert marker["requested"] == ["num_leaves"]
    assert marker["options"]["thresh"] == 300.0                   # click's default, recorded, not requested
    weakalign("tri1", "--num-leaves", "500", "--thresh", "300")   # a default typed out: the same request
    weakalign("tri1")
    assert len(calls["tri1"]) == 1
    assert caplog.text.count("[an4] tri1: already done with these options") == 2
    caplog.clear()
    weakalign("tri1", "--num-leaves", "400")
    assert len(calls["tri1"]) == 2 and calls["tri1"][-1]["num_leaves"] == 400
    assert "[an4] tri1: the request differs from the finished run, redoing it: num_leaves: 500 -> 400" in caplog.text


def test_an_upstream_redo_then_align_keeps_every_recorded_option(calls, weakalign):
    weakalign("align", "--lexicon", __file__, "--num-leaves", "77", "--tri1-total-gauss", "999", "--no-textgrid")
    assert all(len(calls[name]) == 1 for name in ALIGN_STAGES)
    weakalign("prepare", "--force")                           # everything downstream of prepare goes stale
    assert [name for name in ALIGN_STAGES if is_done(weakalign.ws, name)] == ["prepare"]
    weakalign("align")                                         # and reruns with what was asked, not defaults
    assert calls["lang"][-1]["lexicon"] == __file__
    assert (calls["tri1"][-1]["num_leaves"], calls["tri1"][-1]["total_gauss"]) == (77, 999)
    assert calls["mono"][-1]["total_gauss"] == 1000            # mono's own option: untouched by tri1's
    assert calls["export"][-1]["textgrids"] is False
    assert len(calls["prepare"]) == 2 and all(len(calls[name]) == 2 for name in ALIGN_STAGES[1:])


def test_a_features_redo_leaves_lang_done(calls, weakalign, caplog):
    weakalign("align", "--stop-after", "tri1")
    weakalign("features", "--force")
    assert is_done(weakalign.ws, "lang") and not is_done(weakalign.ws, "mono")
    caplog.clear()
    weakalign("align", "--stop-after", "tri1")
    assert len(calls["lang"]) == 1 and len(calls["mono"]) == 2
    assert "[an4] lang: already done" in caplog.text


def test_align_takes_a_config_file_and_its_command_line_wins(calls, weakalign, tmp_path):
    config = tmp_path / "align.yaml"
    config.write_text("tri1:\n  num_leaves: 120\n  total-gauss: 600\n"
                      "hybrid:\n  epochs: 5\n  speed_perturb: [0.9, 1.1]\n  decode: false\n"
                      "prepare:\n  max_utts_per_split: train=60,dev=12\n")
    weakalign("align", "--config", str(config), "--epochs", "3", "--from", "prepare")
    tri1, hybrid = calls["tri1"][-1], calls["hybrid"][-1]
    assert (tri1["num_leaves"], tri1["total_gauss"]) == (120, 600)
    assert (hybrid["epochs"], hybrid["speed_perturb"], hybrid["decode"]) == (3, (0.9, 1.1), False)
    assert calls["prepare"][-1]["max_utts_per_split"] == "train=60,dev=12"
    recorded = json.loads(options_path(weakalign.ws, "hybrid").read_text())["options"]
    assert recorded == {"epochs": 3, "speed_perturb": [0.9, 1.1], "decode": False}


@pytest.mark.parametrize("config, message", [
    ("tri9:\n  num_leaves: 1\n", "unknown stage 'tri9'"),
    ("tri1:\n  num_leafs: 1\n", "stage tri1 has no option 'num_leafs'"),
    ("tri1:\n  num_leaves: many\n", "'many' is not a valid integer"),
])
def test_a_wrong_config_is_one_usage_error_naming_it(calls, tmp_path, config, message):
    path = tmp_path / "align.yaml"
    path.write_text(config)
    result = CliRunner().invoke(cli, ["align", "an4", "--exp-root", str(tmp_path), "--config", str(path)])
    assert result.exit_code == 2 and message in result.output
    assert not any(calls.values())


def test_options_for_stages_left_out_are_said_to_be_unused(calls, weakalign, caplog):
    weakalign("align", "--from", "tri1", "--stop-after", "tri1", "--lexicon", __file__)
    assert calls["lang"] == [] and len(calls["tri1"]) == 1
    assert "options for stages this run leaves out, not used: lang.lexicon" in caplog.text


def test_align_runs_the_opt_in_tri2_only_when_named_with_its_own_options(calls, weakalign):
    weakalign("align", "--stop-after", "tri1")
    assert calls["tri2"] == [] and len(calls["tri1"]) == 1
    weakalign("align", "--stop-after", "tri2", "--num-leaves", "77", "--tri2-num-leaves", "450",
              "--tri2-mllt-iters", "none")
    assert calls["tri1"][-1]["num_leaves"] == 77          # the plain spelling stays tri1's
    assert (calls["tri2"][-1]["num_leaves"], calls["tri2"][-1]["mllt_iters"]) == (450, ())
    assert calls["hybrid"] == []
    weakalign("align", "--from", "tri2", "--stop-after", "tri2", "--tri2-mllt-iters", "2,4")
    assert calls["tri2"][-1]["mllt_iters"] == (2, 4) and len(calls["tri1"]) == 2
    assert calls["tri3"] == []


def test_align_stop_after_tri3_runs_tri2_then_tri3_with_its_own_options(calls, weakalign):
    weakalign("align", "--from", "tri1", "--stop-after", "tri3", "--tri3-fmllr-iters", "2,4",
              "--tri3-num-leaves", "350")
    assert len(calls["tri1"]) == len(calls["tri2"]) == len(calls["tri3"]) == 1
    assert (calls["tri3"][-1]["fmllr_iters"], calls["tri3"][-1]["num_leaves"]) == ((2, 4), 350)
    assert calls["tri2"][-1]["num_leaves"] is None and calls["hybrid"] == []
    weakalign("align", "--from", "tri3", "--stop-after", "tri3", "--tri3-fmllr-iters", "none")
    assert len(calls["tri2"]) == 1 and calls["tri3"][-1]["fmllr_iters"] == ()


def test_align_runs_the_gmm_system_the_hybrid_trains_on_first(calls, weakalign, monkeypatch):
    weakalign("align", "--from", "tri1", "--source-ali", "tri3_ali")
    assert len(calls["tri2"]) == len(calls["tri3"]) == len(calls["hybrid"]) == 1
    assert calls["hybrid"][-1]["source_ali"] == "tri3_ali"
    weakalign("align", "--from", "tri1", "--force")       # the hybrid's recorded request still needs tri3
    assert len(calls["tri3"]) == 2 and calls["hybrid"][-1]["source_ali"] == "tri3_ali"
    weakalign("align", "--from", "tri1", "--stop-after", "tri1", "--force")  # the hybrid left out: so are they
    assert len(calls["tri3"]) == 2
    weakalign("align", "--from", "tri1", "--source-ali", "tri2_ali", "--force")
    assert (len(calls["tri2"]), len(calls["tri3"])) == (3, 2) and calls["hybrid"][-1]["source_ali"] == "tri2_ali"


def test_a_corpus_default_source_ali_runs_its_gmm_stages(calls, weakalign, monkeypatch):
    from weakalign.pipeline import recipe

    weakalign("align", "--from", "tri1")
    assert calls["tri3"] == [] and calls["hybrid"][-1]["source_ali"] is None   # an4: tri1_ali
    monkeypatch.setitem(recipe.DEFAULT_SOURCE_ALI, "an4", "tri3_ali")
    weakalign("align", "--from", "tri1", "--force")
    assert len(calls["tri2"]) == len(calls["tri3"]) == 1


def _plan_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.split(":")[0] in STAGE_FUNCTIONS]


def test_align_dry_run_says_what_would_run_and_why_and_runs_nothing(calls, weakalign):
    plan = _plan_lines(weakalign("align", "--dry-run").output)
    assert not any(calls.values()) and not weakalign.ws.done_dir.exists()
    assert plan[0] == "prepare: would run (never finished)"
    assert plan[1] == "features: would run (never finished; prepare would run first)"
    assert [line.split(":")[0] for line in plan] == list(ALIGN_STAGES)
    weakalign("align")
    ran = {name: len(c) for name, c in calls.items()}
    assert _plan_lines(weakalign("align", "--dry-run").output) == [f"{s}: done, nothing to redo" for s in ALIGN_STAGES]
    plan = _plan_lines(weakalign("align", "--dry-run", "--num-leaves", "400").output)
    assert plan[ALIGN_STAGES.index("tri1")] == "tri1: would run (num_leaves: None -> 400)"
    assert plan[-2:] == ["hybrid: would run (tri1 would run first)", "export: would run (tri1 would run first; "
                         "hybrid would run first)"]
    assert plan[ALIGN_STAGES.index("mono")] == "mono: done, nothing to redo"
    assert {name: len(c) for name, c in calls.items()} == ran and is_done(weakalign.ws, "tri1")


def test_a_dry_run_says_the_hybrid_may_rerun_when_its_source_gmm_would(calls, weakalign):
    """The hybrid reads tri3's alignments through a declared input: a tri3 rerun that rewrites the
    same alignments leaves it done, so the plan says it may run, not that it will."""
    weakalign("align", "--source-ali", "tri3_ali")
    marker_path(weakalign.ws, "tri3").unlink()
    plan = _plan_lines(weakalign("align", "--dry-run").output)
    assert plan[-3:] == ["tri3: would run (never finished)",
                         "hybrid: may run (if tri3's rerun changes its outputs, which hybrid reads)",
                         "export: may run (if hybrid's rerun changes its outputs, which export reads)"]


def test_a_dry_run_names_the_source_gmm_among_what_runs_before_a_hybrid_that_runs(calls, weakalign):
    plan = _plan_lines(weakalign("align", "--dry-run", "--source-ali", "tri3_ali").output)
    hybrid = next(line for line in plan if line.startswith("hybrid:"))
    assert hybrid.startswith("hybrid: would run (never finished; prepare would run first;")
    assert hybrid.endswith("; tri1 would run first; tri3 would run first)")
    assert not any(calls.values())
