"""Option changes of ``prepare`` and ``lang`` on real AN4 audio and lexicon, through the CLI
(issue #19, items 1 and 4): a different request redoes the stage, the same one is "already
done", and a stage rerun because an upstream one was redone keeps what the user asked for.

A tiny slice (4/2/2 utterances) keeps each stage well under a second.
"""

import shutil

import pytest
from click.testing import CliRunner
from lhotse import load_manifest

from weakalign.pipeline.align_options import runtime_args
from weakalign.pipeline.cli import cli
from weakalign.pipeline.io import read_json
from weakalign.pipeline.stage import is_done, marker_path, setup_console_logging
from weakalign.pipeline.workspace import SPLITS, Workspace

setup_console_logging()  # before the first test, so that caplog sees the stage logger (see test_stage_options)

TINY = ["--max-utts-per-split", "train=4,dev=2,test=2", "--utts-per-speaker", "2"]


@pytest.fixture
def weakalign(tmp_path, corpora_dir):
    roots = ["--data-root", str(tmp_path / "data"), "--exp-root", str(tmp_path / "exp")]

    def run(command, *args):
        nj = runtime_args(cli.commands[command], 1, None)
        result = CliRunner().invoke(cli, [command, "an4", *roots, *nj, *args], catch_exceptions=False,
                                    env={"WEAKALIGN_CORPORA": str(corpora_dir)})
        assert result.exit_code == 0, result.output
        return result

    run.ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    return run


def split_sizes(ws):
    return [len(load_manifest(ws.manifest("supervisions", s))) for s in SPLITS]


def lang_summary(ws):
    return read_json(marker_path(ws, "lang"))["summary"]


@pytest.fixture
def short_lexicon(tmp_path, corpora_dir, weakalign):
    """AN4's lexicon, LM and fillers in another dir, less the first word of the slice's train text."""
    weakalign("prepare", *TINY)
    word = next(iter(load_manifest(weakalign.ws.manifest("supervisions", "train")))).text.split()[0]
    etc = corpora_dir / "an4" / "etc"
    out = tmp_path / "mylex"
    out.mkdir()
    for name in ("an4.filler", "an4.ug.lm"):
        shutil.copy(etc / name, out / name)
    lines = (etc / "an4.dic").read_text().splitlines(keepends=True)
    (out / "an4.dic").write_text("".join(line for line in lines if line.split()[0].split("(")[0] != word))
    return out / "an4.dic"


def test_prepare_redoes_a_changed_slice_and_only_then(weakalign, caplog):
    weakalign("prepare", *TINY)
    assert split_sizes(weakalign.ws) == [4, 2, 2]
    caplog.clear()
    weakalign("prepare", "--max-utts-per-split", "3")
    assert ("[an4] prepare: the request differs from the finished run, redoing it: "
            "max_utts_per_split: 'train=4,dev=2,test=2' -> '3'") in caplog.text
    assert split_sizes(weakalign.ws) == [3, 3, 3]          # the recorded --utts-per-speaker 2 still holds
    caplog.clear()
    weakalign("prepare", "--max-utts-per-split", "3")
    assert "[an4] prepare: already done with these options" in caplog.text
    weakalign("prepare", "--max-utts-per-split", "all", "--utts-per-speaker", "0")
    assert split_sizes(weakalign.ws)[0] > 100               # whole splits again


def test_lang_redoes_a_changed_lexicon_and_align_keeps_it_after_an_upstream_redo(weakalign, short_lexicon, caplog):
    weakalign("lang", "--lexicon", str(short_lexicon))
    assert lang_summary(weakalign.ws)["lexicon"] == str(short_lexicon)
    assert lang_summary(weakalign.ws)["oov"]["train"]["oov_tokens"] > 0
    caplog.clear()
    weakalign("lang")
    assert "[an4] lang: already done with these options" in caplog.text

    weakalign("features")
    weakalign("features", "--force")                        # features are not an input of lang
    assert is_done(weakalign.ws, "lang")
    weakalign("prepare", "--force")                         # prepare is: lang goes stale ...
    assert not is_done(weakalign.ws, "lang")
    caplog.clear()
    weakalign("align", "--stop-after", "lang")              # ... and align rebuilds it with the same lexicon
    assert lang_summary(weakalign.ws)["lexicon"] == str(short_lexicon)
    assert lang_summary(weakalign.ws)["oov"]["train"]["oov_tokens"] > 0
    assert "[an4] prepare: already done" in caplog.text and "stage lang: start" in caplog.text

    caplog.clear()
    default = read_json(marker_path(weakalign.ws, "prepare"))["summary"]["src"] + "/etc/an4.dic"
    weakalign("lang", "--lexicon", default)
    changed = [r.getMessage() for r in caplog.records if "request differs" in r.getMessage()]
    assert len(changed) == 1
    assert f"lexicon: '{short_lexicon}' -> '{default}'" in changed[0]
    assert f"lexicon file: {short_lexicon} sha256:" in changed[0]   # and the file it reads, by content
    assert lang_summary(weakalign.ws)["oov"]["train"]["oov_tokens"] == 0


def test_an_edited_lexicon_rebuilds_lang(weakalign, short_lexicon, caplog):
    weakalign("lang", "--lexicon", str(short_lexicon))
    with open(short_lexicon, "a") as f:
        f.write("ZZYZX                Z IH Z IH K S\n")
    caplog.clear()
    weakalign("lang")
    assert f"[an4] lang: the request differs from the finished run, redoing it: lexicon file: {short_lexicon} sha256:" \
        in caplog.text
    assert "ZZYZX" in (weakalign.ws.lang / "words.txt").read_text()
