"""What ``weakalign export`` is asked for decides what it returns (issue #19, items 1 and 4),
on the real tri1 alignments of the AN4 slice: ``--no-textgrid`` and ``--ali-dir`` are new
requests, not "already done"; a dir that is no alignment dir is one clear error; a dir that
aligns train only (``exp/<c>/mono``) exports train and reports the empty dev split.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import shutil

import pytest
from click.testing import CliRunner
from lhotse import CutSet

from tests.fixtures_align import linked_workspace
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, write_ali_archive
from weakalign.pipeline.cli import cli
from weakalign.pipeline.io import read_json
from weakalign.pipeline.stage import marker_path, setup_console_logging

setup_console_logging()  # before the first test, so that caplog sees the stage logger


@pytest.fixture
def ws(an4_slice_tri1, tmp_path):
    """A workspace of its own (links to the slice's fbank, lang, mono and tri1_ali)."""
    return linked_workspace(an4_slice_tri1, tmp_path / "ws", ali_dirs=("tri1_ali", "mono"))


def export(ws, *args, ok=True):
    result = CliRunner().invoke(cli, ["export", "an4", "--data-root", str(ws.data_root), "--exp-root",
                                      str(ws.exp_root), *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def summary(ws):
    return read_json(marker_path(ws, "export"))["summary"]


def redo_lines(caplog):
    return [r.getMessage() for r in caplog.records if "request differs" in r.getMessage()]


def test_no_textgrid_redoes_the_export_without_them_and_only_once(ws, caplog):
    export(ws)
    textgrids = ws.data / "ali" / "textgrid" / "dev"
    assert len(list(textgrids.rglob("*.TextGrid"))) == 12
    caplog.clear()
    export(ws, "--no-textgrid")
    assert redo_lines(caplog) == ["[an4] export: the request differs from the finished run, redoing it: "
                                  "textgrids: True -> False"]
    assert not textgrids.exists()                          # the earlier export's are not passed off as this one's
    caplog.clear()
    export(ws, "--no-textgrid")
    export(ws)                                             # no new request: the recorded --no-textgrid holds
    assert caplog.text.count("[an4] export: already done with these options") == 2 and not textgrids.exists()


def test_an_ali_dir_without_final_mdl_is_one_clear_error_even_after_an_export(ws, tmp_path):
    export(ws, "--no-textgrid")
    not_ali = tmp_path / "not_ali"
    not_ali.mkdir()
    (not_ali / "ali.1.gz").write_bytes(b"")
    result = export(ws, "--ali-dir", str(not_ali), ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == (f"Error: alignment dir {not_ali} has no final.mdl: --ali-dir takes a Kaldi "
                             "alignment dir (final.mdl + ali.*.gz [+ phones.txt])\n")
    assert summary(ws)["ali_dir"] == str(ws.exp / "tri1_ali")     # the finished export is untouched


def test_a_train_only_ali_dir_exports_train_and_reports_the_empty_dev_split(ws, caplog):
    export(ws, "--no-textgrid")
    assert ws.ali_cuts("dev").exists()
    caplog.clear()
    result = export(ws, "--ali-dir", str(ws.exp / "mono"))
    assert redo_lines(caplog)[0].startswith(
        f"[an4] export: the request differs from the finished run, redoing it: ali_dir: None -> '{ws.exp / 'mono'}'")
    done = summary(ws)
    assert done["ali_dir"] == str(ws.exp / "mono") and done["splits_without_alignments"]["dev"] == 12
    assert done["splits"]["train"]["exported"] == 60 and "dev" not in done["splits"]
    assert f"dev: not exported: none of its 12 utterances has an alignment in {ws.exp / 'mono'}" in result.output
    assert len(CutSet.from_file(ws.ali_cuts("train"))) == 60
    assert not ws.ali_cuts("dev").exists()                  # not tri1's dev cuts of the earlier export
    assert not (ws.data / "ali" / "ctm" / "dev.phone.ctm").exists()


def test_alignments_rewritten_in_place_are_exported_again(ws, tmp_path, caplog):
    kaldi_dir = tmp_path / "kaldi_ali"                     # as real Kaldi may leave one: a model, one archive
    kaldi_dir.mkdir()
    shutil.copy(ws.exp / "tri1_ali" / "final.mdl", kaldi_dir)
    alignments = read_ali_dir(ws.exp / "tri1_ali")
    write_ali_archive(kaldi_dir / "ali.1.gz", alignments.items())
    export(ws, "--ali-dir", str(kaldi_dir), "--no-textgrid")
    dropped = sorted(alignments)[0]
    write_ali_archive(kaldi_dir / "ali.1.gz", [(u, a) for u, a in alignments.items() if u != dropped])
    caplog.clear()
    export(ws, "--ali-dir", str(kaldi_dir), "--no-textgrid")
    assert redo_lines(caplog)[0].startswith("[an4] export: the request differs from the finished run, redoing it: "
                                            f"alignments: {kaldi_dir} sha256:")
    assert dict(summary(ws)["items"])[dropped].startswith("no alignment")


def test_mfa_json_and_csv_replace_the_textgrids_with_the_same_segments(ws):
    """``--textgrid-format json|csv``: one ``<recording>.json``/``.csv`` per TextGrid, in the same
    speaker folders, with the TextGrid's labelled intervals."""
    import csv
    import json

    from weakalign.align.formats import read_textgrid

    export(ws)
    grids = ws.data / "ali" / "textgrid" / "dev"
    expected = {p.relative_to(grids).with_suffix(""): read_textgrid(p) for p in grids.rglob("*.TextGrid")}
    export(ws, "--textgrid-format", "json")
    found = {p.relative_to(grids).with_suffix(""): json.loads(p.read_text()) for p in grids.rglob("*.json")}
    assert set(found) == set(expected) and not list(grids.rglob("*.TextGrid"))
    for name, data in found.items():
        for tier, intervals in expected[name].items():
            labelled = [[round(a, 2), round(b, 2), t] for a, b, t in intervals if t]
            assert [[round(a, 2), round(b, 2), t] for a, b, t in data["tiers"][tier]["entries"]] == labelled
    export(ws, "--textgrid-format", "csv")
    name = next(iter(expected))
    with open((grids / name).with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["Speaker"] for row in rows} == {name.parent.name}
    assert [row["Label"] for row in rows if row["Type"] == "words"] == [t for _, _, t in expected[name]["words"] if t]
