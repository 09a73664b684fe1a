"""Archiving an export's alignment set and restoring it elsewhere (the AN4 slice's real tri1 alignments)."""

import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst

import shutil

import pytest
from click.testing import CliRunner

from weakalign.align.archive import MANIFEST, archive_alignment_set, exported_digests
from weakalign.align.export import export_stage
from weakalign.kaldi_steps.kaldi_io import iter_ali_archive, write_ali_archive
from weakalign.pipeline.io import read_json
from weakalign.pipeline.stage import MissingInput, marker_path, run_stage
from tests.fixtures_align import linked_workspace


def test_an_archived_set_restores_the_same_labels_in_another_workspace(an4_slice_tri1, tmp_path):
    ws = linked_workspace(an4_slice_tri1, tmp_path / "here")
    marker_path(ws, "tri1").parent.mkdir(parents=True)
    shutil.copy(marker_path(an4_slice_tri1, "tri1"), marker_path(ws, "tri1"))   # names the set's source stage
    with pytest.raises(MissingInput, match="run the export stage"):
        archive_alignment_set(ws, tmp_path / "sets")
    run_stage("export", ws, export_stage)
    digests = exported_digests(ws)
    archive = archive_alignment_set(ws, tmp_path / "sets")

    assert archive.name == digests["alignment_digest"][:8]
    manifest = read_json(archive / MANIFEST)
    assert {k: manifest[k] for k in digests} == digests
    assert manifest["source_stage"]["stage"] == "tri1" and manifest["export_splits"]["train"]["exported"] > 0
    src = ws.exp / "tri1_ali"
    assert sorted(p.name for p in archive.glob("ali.*.gz")) == sorted(p.name for p in src.glob("ali.*.gz"))
    assert (archive / "final.mdl").read_bytes() == (src / "final.mdl").read_bytes()

    # Elsewhere: a workspace with no alignments of its own exports the archive -> the same digests.
    there = linked_workspace(an4_slice_tri1, tmp_path / "there", ali_dirs=())
    run_stage("export", there, export_stage, ali_dir=str(archive))
    assert exported_digests(there) == digests

    # A damaged archive does not pass for the set: one utterance's alignment dropped.
    first = sorted(archive.glob("ali.*.gz"))[0]
    alis = list(iter_ali_archive(first))
    write_ali_archive(first, alis[1:])
    again = linked_workspace(an4_slice_tri1, tmp_path / "again", ali_dirs=())
    run_stage("export", again, export_stage, ali_dir=str(archive))
    assert exported_digests(again)["alignment_digest"] != digests["alignment_digest"]


def test_alignments_changed_since_the_export_are_not_archived(an4_slice_tri1, tmp_path):
    ws = linked_workspace(an4_slice_tri1, tmp_path / "ws", ali_dirs=())
    own = tmp_path / "own_ali"
    shutil.copytree(an4_slice_tri1.exp / "tri1_ali", own)
    run_stage("export", ws, export_stage, ali_dir=str(own))
    first = sorted(own.glob("ali.*.gz"))[0]
    write_ali_archive(first, list(iter_ali_archive(first))[1:])      # realigned in place after the export
    with pytest.raises(MissingInput, match="changed since the export"):
        archive_alignment_set(ws, tmp_path / "sets")
    run_stage("export", ws, export_stage, ali_dir=str(own))           # a new export: archived
    assert archive_alignment_set(ws, tmp_path / "sets").name == exported_digests(ws)["alignment_digest"][:8]


def test_cli_archives_under_results_by_default(an4_slice_tri1, tmp_path, monkeypatch):
    from weakalign.pipeline.cli import cli

    ws = linked_workspace(an4_slice_tri1, tmp_path / "ws")
    run_stage("export", ws, export_stage)
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli, ["archive-ali", ws.corpus, "--data-root", str(ws.data_root),
                                    "--exp-root", str(ws.exp_root)])
    assert done.exit_code == 0, done.output
    digest = exported_digests(ws)["alignment_digest"]
    assert (tmp_path / "results" / ws.corpus / "alignment_sets" / digest[:8] / MANIFEST).exists()
    assert digest in done.output
