"""Options are part of a stage's identity (issue #19, item 1), on toy stages.

A toy stage records the options each call of it got, so a test sees exactly what ran.
The stage names are the recipe's, so invalidation follows the real dependency graph.
"""

import json

import pytest

from weakalign.pipeline.io import write_json
from weakalign.pipeline.options import content_digest, declares_inputs, options_path, resolves_defaults
from weakalign.pipeline.recipe import ALIGN_STAGES, DEPENDS_ON, EXTRA_STAGES, dependents
from weakalign.pipeline.stage import is_done, marker_path, run_stage, setup_console_logging
from weakalign.pipeline.workspace import Workspace

# The stage logger stops propagating once set up; pytest's caplog then hooks onto it, but only
# for tests that start after that: set it up before the first.
setup_console_logging()


@pytest.fixture
def ws(tmp_path):
    return Workspace("toy", data_root=tmp_path / "data", exp_root=tmp_path / "exp")


class Toy:
    """A stage function ``(ws, size=1, name="a")`` that remembers every call's options."""

    def __init__(self):
        self.calls = []

    def __call__(self, ws, size=1, name="a"):
        self.calls.append({"size": size, "name": name})
        return {"size": size}


def stage_lines(caplog, stage):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"[toy] {stage}:")]


def test_a_changed_option_redoes_the_stage_with_one_line_naming_it(ws, caplog):
    toy = Toy()
    run_stage("tri1", ws, toy, size=300)
    caplog.clear()
    run_stage("tri1", ws, toy, size=300)
    assert len(toy.calls) == 1
    assert stage_lines(caplog, "tri1") == [f"[toy] tri1: already done with these options ({marker_path(ws, 'tri1')}); "
                                           "--force to redo"]
    caplog.clear()
    assert run_stage("tri1", ws, toy, size=500, name="a") == {"size": 500, "outputs": []}
    assert toy.calls[-1] == {"size": 500, "name": "a"}
    # One line, naming the option that changed and only it (name="a" is what it ran with).
    assert stage_lines(caplog, "tri1") == ["[toy] tri1: the request differs from the finished run, redoing it: "
                                           "size: 300 -> 500"]
    marker = json.loads(marker_path(ws, "tri1").read_text())
    assert marker["options"] == {"size": 500, "name": "a"} and marker["requested"] == ["name", "size"]


class CorpusSizedToy(Toy):
    """A toy whose ``size`` defaults to ``None``: the corpus's size (300 for "toy"), as tri1's ``num_leaves``."""

    def __call__(self, ws, size=None, name="a"):
        return super().__call__(ws, size or 300, name)


def test_a_default_asked_for_by_value_matches_the_run_that_resolved_it(ws, caplog):
    toy = resolves_defaults(lambda ws, options: {"size": options.get("size") or 300})(CorpusSizedToy())
    run_stage("tri1", ws, toy)
    assert json.loads(marker_path(ws, "tri1").read_text())["options"] == {"size": 300, "name": "a"}
    for request in ({"size": 300}, {"size": None}):        # the value it ran with, by name or as "the default"
        caplog.clear()
        run_stage("tri1", ws, toy, **request)
        assert len(toy.calls) == 1 and "already done" in caplog.text, request
    caplog.clear()
    run_stage("tri1", ws, toy, size=400)
    assert toy.calls[-1] == {"size": 400, "name": "a"}
    assert stage_lines(caplog, "tri1") == ["[toy] tri1: the request differs from the finished run, redoing it: "
                                           "size: 300 -> 400"]


def test_without_a_resolver_a_none_default_stays_none_and_differs_from_a_value(ws, caplog):
    toy = CorpusSizedToy()
    run_stage("tri1", ws, toy)
    run_stage("tri1", ws, toy, size=300)
    assert len(toy.calls) == 2 and "size: None -> 300" in caplog.text


def test_options_not_given_again_are_the_recorded_ones_not_the_defaults(ws):
    toy = Toy()
    run_stage("tri1", ws, toy, size=500)
    run_stage("tri1", ws, toy, force=True)                 # redone, with what was asked before
    run_stage("tri1", ws, toy, name="b")                   # one new option: the other stays
    assert toy.calls == [{"size": 500, "name": "a"}, {"size": 500, "name": "a"}, {"size": 500, "name": "b"}]
    assert json.loads(options_path(ws, "tri1").read_text())["options"] == {"size": 500, "name": "b"}


def test_defaults_fill_in_only_what_was_never_requested_and_are_not_compared(ws, caplog):
    toy = Toy()
    run_stage("tri1", ws, toy, defaults={"size": 300, "name": "a"}, name="b")
    assert toy.calls == [{"size": 300, "name": "b"}]
    # A command whose default moved on does not redo a finished run by itself ...
    run_stage("tri1", ws, toy, defaults={"size": 400, "name": "a"})
    assert len(toy.calls) == 1 and "already done" in caplog.text
    # ... and a rerun keeps the request (name="b") while taking the defaults of today.
    run_stage("tri1", ws, toy, force=True, defaults={"size": 400, "name": "a"})
    assert toy.calls[-1] == {"size": 400, "name": "b"}


def test_recorded_options_survive_an_upstream_redo_and_an_interruption(ws):
    toy, crashing = Toy(), Toy()
    run_stage("prepare", ws, Toy())
    run_stage("lang", ws, toy, name="my.dic")
    run_stage("prepare", ws, Toy(), force=True)
    assert not is_done(ws, "lang")
    run_stage("lang", ws, toy)                             # as `align` reruns it: no options given
    assert toy.calls[-1] == {"size": 1, "name": "my.dic"}

    def killed(ws, **options):
        crashing(ws, **options)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("lang", ws, killed, name="other.dic")
    run_stage("lang", ws, toy)                             # the interrupted request is the one resumed
    assert crashing.calls == [{"size": 1, "name": "other.dic"}] and toy.calls[-1]["name"] == "other.dic"


def test_invalidation_follows_the_dependency_graph_not_the_recipe_order(ws, caplog):
    for name in ALIGN_STAGES:
        run_stage(name, ws, Toy())
    caplog.clear()
    run_stage("features", ws, Toy(), force=True)
    assert {n for n in ALIGN_STAGES if is_done(ws, n)} == {"prepare", "features", "lang"}
    assert "[toy] features is being redone: mono, tri1, hybrid, export now stale and will rerun" in caplog.text
    run_stage("lang", ws, Toy())
    assert "[toy] lang: already done" in caplog.text
    for name in ALIGN_STAGES:
        run_stage(name, ws, Toy())
    run_stage("hybrid", ws, Toy(), size=2)
    assert {n for n in ALIGN_STAGES if not is_done(ws, n)} == {"export"}


def test_the_graph_lists_real_stages_in_an_order_that_respects_it():
    order = ALIGN_STAGES + EXTRA_STAGES
    assert list(DEPENDS_ON) == order
    for stage, inputs in DEPENDS_ON.items():
        assert all(order.index(i) < order.index(stage) for i in inputs), stage
    assert "lang" not in dependents("features") and "features" not in dependents("lang")
    assert dependents("tri1") == ["hybrid", "export", "tri2", "tri3"] and dependents("export") == []
    assert "export-kaldi" in dependents("features") and "export-kaldi" not in dependents("lang")


def test_a_declared_input_whose_content_changes_redoes_the_stage(ws, tmp_path, caplog):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("a AH\n")

    @declares_inputs(lambda ws, options: {"lexicon": content_digest([options["path"]])})
    def lang(ws, path):
        return {"words": len(open(path).read().splitlines())}

    run_stage("lang", ws, lang, path=lexicon)
    run_stage("lang", ws, lang, path=lexicon)
    assert "already done" in caplog.text
    before = content_digest([lexicon])
    lexicon.write_text("a AH\nb B IY\n")                    # edited in place: same path, new content
    caplog.clear()
    assert run_stage("lang", ws, lang)["words"] == 2       # the recorded path, its new content
    assert f"redoing it: lexicon: {before} -> {content_digest([lexicon])}" in caplog.text


def test_a_marker_from_before_options_were_recorded(ws, caplog):
    toy = Toy()
    write_json(marker_path(ws, "mono"), {"stage": "mono", "summary": {"outputs": []}})
    run_stage("mono", ws, toy)                             # nothing asked: it stands
    assert toy.calls == [] and "already done" in caplog.text
    run_stage("mono", ws, toy, size=3)                     # something asked: it cannot tell, so it redoes
    assert toy.calls == [{"size": 3, "name": "a"}]
    assert "redoing it: size: (not recorded) -> 3" in caplog.text


def test_a_recorded_option_the_stage_no_longer_takes_is_dropped_with_a_warning(ws, caplog):
    write_json(options_path(ws, "mono"), {"stage": "mono", "options": {"size": 2, "renamed": 1}})
    toy = Toy()
    run_stage("mono", ws, toy)
    assert toy.calls == [{"size": 2, "name": "a"}]
    assert "recorded option(s) renamed are no longer options of the stage; dropped" in caplog.text


def test_runtime_options_are_passed_on_but_neither_compared_nor_recorded(ws):
    calls = []

    def mono(ws, nj=1, size=1):
        calls.append((nj, size))
        return {}

    run_stage("mono", ws, mono, nj=2, size=5)
    run_stage("mono", ws, mono, nj=1, size=5)               # fewer jobs: the same result, still done
    run_stage("mono", ws, mono, force=True, nj=3)
    assert calls == [(2, 5), (3, 5)]
    assert json.loads(options_path(ws, "mono").read_text())["options"] == {"size": 5}
