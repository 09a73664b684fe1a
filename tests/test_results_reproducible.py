"""Every generated table and figure section of RESULTS.md is what the published runs under
``results/`` give: ``make results`` rebuilt from a copy of ``results/`` changes no number.

The sections between ``<!-- weakalign results ... begin/end -->`` markers come from the runs'
``results.json``, per-utterance ``trn`` files and configs (``weakalign results-table --from-results``,
bootstrap and sign-flip p-values seeded); only the Environment lines (date, git commit, threads)
may differ. A run published without regenerating RESULTS.md, or a number edited by hand, fails here.
"""

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Environment lines of a generated section: when and where it was built, not what it says.
ENVIRONMENT = re.compile(r"^- (date|git_hash|git_commit_date|device): .*$", re.M)


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
    committed, rebuilt = (ENVIRONMENT.sub("", p.read_text()) for p in (REPO / "RESULTS.md", out))
    if rebuilt != committed:
        import difflib

        diff = "\n".join(list(difflib.unified_diff(committed.splitlines(), rebuilt.splitlines(), "RESULTS.md",
                                                   "rebuilt", lineterm="", n=1))[:40])
        pytest.fail(f"RESULTS.md differs from `make results` on results/ (run it and commit):\n{diff}")
