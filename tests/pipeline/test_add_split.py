"""``weakalign add-split``: speechocean762's held-out test half, laid out as the corpus ships it,
added to a prepared and featurised slice of the train half; nothing that exists is redone."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from lhotse import CutSet

from weakalign.e2e.score import load_split_cuts, splits_to_score
from weakalign.pipeline.add_split import STAGE, add_split
from weakalign.pipeline.cli import cli
from weakalign.pipeline.corpora import prepare
from weakalign.pipeline.features import compute_features
from weakalign.pipeline.options import options_path
from weakalign.pipeline.stage import marker_path, run_stage
from weakalign.pipeline.workspace import Workspace


def make_half(so: Path, root: Path, split: str, lines: slice) -> tuple[Path, list[str]]:
    """A "half" of speechocean762 as shipped: ``<split>/`` (wav.scp relative to the corpus dir,
    text, utt2spk) beside ``WAVE/``, made of real train-half utterances."""
    (root / split).mkdir(parents=True)
    (root / "WAVE").symlink_to(so / "WAVE")
    wav = (so / "train" / "wav.scp").read_text().splitlines()[lines]
    ids = [line.split()[0] for line in wav]
    text = dict(line.split(maxsplit=1) for line in (so / "train" / "text").read_text().splitlines())
    spk = dict(line.split() for line in (so / "train" / "utt2spk").read_text().splitlines())
    (root / split / "wav.scp").write_text("\n".join(wav) + "\n")
    (root / split / "text").write_text("".join(f"{i} {text[i]}\n" for i in ids))
    (root / split / "utt2spk").write_text("".join(f"{i} {spk[i]}\n" for i in ids))
    return root, ids


@pytest.fixture
def ws(tmp_path, corpora_dir):
    ws = Workspace("speechocean762", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    run_stage("prepare", ws, prepare, src=corpora_dir / "speechocean762", max_utts_per_split=6,
              utts_per_speaker=3)
    run_stage("features", ws, compute_features, nj=1)
    return ws


def snapshot(ws) -> dict:
    """The bytes of everything prepare and features wrote, their markers and recorded requests."""
    files = [marker_path(ws, "prepare"), marker_path(ws, "features"), options_path(ws, "prepare"),
             ws.fbank_stats]
    for split in ("train", "dev"):
        files += [ws.manifest("recordings", split), ws.manifest("supervisions", split), ws.fbank_cuts(split),
                  ws.mfcc_cuts(split), ws.cmvn(split)]
    return {str(p): p.read_bytes() for p in files}


def test_the_test_half_gets_manifests_and_features_and_nothing_else_changes(ws, corpora_dir, tmp_path):
    before = snapshot(ws)
    half, ids = make_half(corpora_dir / "speechocean762", tmp_path / "half", "test", slice(100, 104))
    summary = run_stage(STAGE, ws, add_split, src=half, nj=1)
    assert summary["splits"] == {"test": {"utterances": 4, "recordings": 4, "speakers": 1,
                                          "hours": summary["splits"]["test"]["hours"]}}
    assert snapshot(ws) == before
    assert ws.available_splits() == ["train", "dev", "test"] and splits_to_score(ws) == ["dev", "test"]
    cuts = load_split_cuts(ws, "test")
    assert sorted(cuts.ids) == sorted(ids)
    assert all(c.load_features().shape == (c.num_frames, 80) for c in cuts)
    # the same fbank a features run over all splits would give (MFCC/CMVN per speaker likewise)
    again = compute_features(ws, nj=1, splits=["test"])
    assert again["splits"]["test"]["cuts"] == 4
    assert {c.id: c.load_features().tolist() for c in CutSet.from_file(ws.fbank_cuts("test"))} == \
        {c.id: c.load_features().tolist() for c in cuts}
    # a second request is already done
    assert run_stage(STAGE, ws, add_split, src=half, nj=1)["splits"] == summary["splits"]


def test_a_split_the_workspace_has_is_refused_in_one_line(ws, corpora_dir, tmp_path):
    half, _ = make_half(corpora_dir / "speechocean762", tmp_path / "half", "dev", slice(100, 102))
    before = snapshot(ws)
    result = CliRunner().invoke(cli, ["add-split", "speechocean762", "--data-root", str(ws.data_root),
                                      "--exp-root", str(ws.exp_root), "--src", str(half)])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "split(s) dev that speechocean762 already has" in errors[0]
    assert snapshot(ws) == before   # the prepared dev is left alone


def test_a_workspace_without_features_is_told_what_to_run(tmp_path, corpora_dir):
    ws = Workspace("speechocean762", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    half, _ = make_half(corpora_dir / "speechocean762", tmp_path / "half", "test", slice(0, 2))
    result = CliRunner().invoke(cli, ["add-split", "speechocean762", "--data-root", str(ws.data_root),
                                      "--exp-root", str(ws.exp_root), "--src", str(half)])
    assert result.exit_code == 1 and "run `weakalign prepare speechocean762`" in result.output, result.output
