"""Every generated table and figure section of RESULTS.md is what the published runs under
``results/`` give: ``make results`` rebuilt from a copy of ``results/`` changes no number.

The sections between ``<!-- weakalign results ... begin/end -->`` markers come from the runs'
``results.json``, per-utterance ``trn`` files and configs (``weakalign results-table --from-results``,
bootstrap and sign-flip p-values seeded), their Environment lines from the runs' own RESULTS.md
(where they were scored), so the rebuilt file is the committed one byte for byte, on any machine. A run
published without regenerating RESULTS.md, or a number edited by hand, fails here.
"""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(240)
def test_results_md_is_what_the_published_runs_give(tmp_path):
    from click.testing import CliRunner

    from weakalign.pipeline.cli import cli

    shutil.copytree(REPO / "results", tmp_path / "results")
    out = tmp_path / "RESULTS.md"
    shutil.copyfile(REPO / "RESULTS.md", out)
    corpora = sorted(d.name for d in (tmp_path / "results").iterdir() if d.is_dir())
    assert {"an4", "speechocean762"} <= set(corpora)
    for corpus in corpora:
        done = CliRunner().invoke(cli, ["results-table", corpus, "--from-results", "--results-root",
                                        str(tmp_path / "results"), "--group", "--baseline", "baseline",
                                        "--out", str(out)])
        assert done.exit_code == 0, f"{corpus}: {done.output}"
    committed, rebuilt = ((REPO / "RESULTS.md").read_text(), out.read_text())
    if rebuilt != committed:
        import difflib

        diff = "\n".join(list(difflib.unified_diff(committed.splitlines(), rebuilt.splitlines(), "RESULTS.md",
                                                   "rebuilt", lineterm="", n=1))[:40])
        pytest.fail(f"RESULTS.md differs from `make results` on results/ (run it and commit):\n{diff}")
