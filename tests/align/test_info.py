"""``ali-info`` on the real tri1 alignments of the AN4 slice."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import json

import numpy as np
import pytest
from click.testing import CliRunner
from lhotse import CutSet

from weakalign.align.info import alignment_info, run_ids, vanishing_segments
from weakalign.align.loader import subsampled_length
from weakalign.pipeline.workspace import Workspace
from tests.fixtures_align import exported_workspace


@pytest.fixture(scope="module")
def info_ws(an4_slice_tri1, tmp_path_factory) -> Workspace:
    return exported_workspace(an4_slice_tri1, tmp_path_factory.mktemp("info"))


def brute_force_vanished(labels: np.ndarray) -> tuple[int, int]:
    """Runs of equal labels containing none of the encoder windows' centre frames 4j+3."""
    centres = {4 * j + 3 for j in range(subsampled_length(len(labels)))}
    runs, start = [], 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[t - 1]:
            runs.append(range(start, t))
            start = t
    return sum(not any(f in centres for f in r) for r in runs), len(runs)


def test_vanishing_segments_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    for _ in range(50):
        labels = np.repeat(rng.integers(0, 5, 30), rng.integers(1, 9, 30))
        assert vanishing_segments(run_ids(labels)) == brute_force_vanished(labels)


def test_ali_info_figures_agree_with_the_exported_arrays(info_ws):
    stats = alignment_info(info_ws, split="train", top_k=5)
    cuts = CutSet.from_file(info_ws.ali_cuts("train"))
    senones = [c.load_senone() for c in cuts]
    counts = np.bincount(np.concatenate(senones), minlength=stats["senones"]["in_model"])
    assert stats["utterances"] == stats["split_utterances"] == len(senones) and stats["missing"] == 0
    assert stats["frames"] == counts.sum()
    assert stats["senones"]["used"] == (counts > 0).sum() <= stats["senones"]["in_model"]
    assert stats["senones"]["majority_senone"] == counts.argmax()
    assert stats["senones"]["majority_senone_rate"] == pytest.approx(counts.max() / counts.sum(), abs=1e-4)
    assert [t["frames"] for t in stats["senones"]["top"]] == sorted(counts, reverse=True)[:5]
    vanished = np.sum([brute_force_vanished(s) for s in senones], axis=0)
    v = stats["vanishing_at_40ms"]
    assert (v["senone_vanished"], v["senone_segments"]) == tuple(vanished)
    assert 0 < v["phone_vanished_share"] < v["senone_vanished_share"] < 1
    phone_items = [p for c in cuts for p in c.supervisions[0].alignment["phone"]]
    durations = stats["phone_durations"]
    assert sum(d["count"] for d in durations.values()) == len(phone_items)
    sil = [round(p.duration * 1000) for p in phone_items if p.symbol == "SIL"]
    assert durations["SIL"]["mean_ms"] == pytest.approx(np.mean(sil), abs=6)
    assert min(d["min_ms"] for d in durations.values()) >= 30  # 3-state HMMs: at least 3 frames
    assert json.loads(open(stats["json"]).read())["frames"] == stats["frames"]


def test_ali_info_command_draws_the_utterance(info_ws):
    from weakalign.pipeline.cli import cli

    utt = list(CutSet.from_file(info_ws.fbank_cuts("dev")).ids)[1]
    result = CliRunner().invoke(cli, ["ali-info", "an4", "--data-root", str(info_ws.data_root), "--exp-root",
                                      str(info_ws.exp_root), "--split", "dev", "--utt", utt])
    assert result.exit_code == 0, result.output
    assert "vanishing at 40 ms" in result.output and "majority senone" in result.output
    png = info_ws.exp / "ali_info" / "tri1_ali" / f"dev_{utt}.png"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
