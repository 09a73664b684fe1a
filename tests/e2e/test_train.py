"""The trainer on the real AN4 slice with a tiny model: learning, resume, run dir, CLI."""

import json

import pytest
import torch
from click.testing import CliRunner
from lhotse import load_manifest

from weakalign.e2e.config import load_config
from weakalign.e2e.data import AsrDataset, cut_text
from weakalign.e2e.build import build_model, load_for_inference
from weakalign.e2e.tokenizer import train_bpe
from weakalign.e2e.train import make_optimizer, train, train_step

from .standin_alignments import NUM_STANDIN_SENONES, an4_standin_ali  # noqa: F401  (fixture)

TINY = {"conv_channels": 4, "enc_hidden": 24, "enc_proj": 16, "dec_embed": 16, "dec_hidden": 24, "dec_heads": 2,
        "vocab_size": 40, "max_duration": 30.0, "warmup_steps": 5, "lr": 0.005, "keep_best": 2}


@pytest.mark.parametrize("name", ["baseline", "aux_ls0.5_l3"])
def test_a_few_steps_reduce_the_loss_on_real_batches(an4_standin_ali, tmp_path, name):
    torch.manual_seed(0)
    cuts = load_manifest(an4_standin_ali.ali_cuts("train"))
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path / "bpe.model", 40)
    config = {**load_config(name), **TINY, "num_senones": NUM_STANDIN_SENONES, "specaug": False}
    model = build_model(config, tok.vocab_size)
    model.cmvn.load_stats(an4_standin_ali.fbank_stats)
    batches = [AsrDataset(tok)[cuts.subset(cut_ids=list(cuts.ids)[i:i + 8])] for i in (0, 8)]

    def eval_stats():
        model.eval()
        with torch.no_grad():
            stats = [model(b)[1] for b in batches]
        model.train()
        return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}

    before = eval_stats()
    optimizer, scheduler = make_optimizer(model, config)
    for step in range(20):
        train_step(model, batches[step % 2], optimizer, scheduler, grad_clip=5.0)
    after = eval_stats()
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["loss_ctc"] < before["loss_ctc"]
    if name == "aux_ls0.5_l3":
        assert after["loss_aux"] < before["loss_aux"]
        assert after["aux_acc"] > before["aux_acc"]


def _params(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_resume_equals_an_uninterrupted_run(an4_standin_ali, tmp_path):
    config = {**load_config("aux_ls0.5_l3"), **TINY, "epochs": 2}
    kw = dict(device="cpu", max_steps_per_epoch=3, progress=False,
              train_cuts=load_manifest(an4_standin_ali.ali_cuts("train")),
              dev_cuts=load_manifest(an4_standin_ali.ali_cuts("dev")).subset(first=4))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(an4_standin_ali, config, straight, **kw)
    train(an4_standin_ali, config, resumed, epochs=1, **kw)        # "killed" after epoch 1
    assert not (resumed / "checkpoints" / "epoch-2.pt").exists()
    train(an4_standin_ali, config, resumed, **kw)                  # picks up at epoch 2
    a, b = _params(straight / "checkpoints" / "epoch-2.pt"), _params(resumed / "checkpoints" / "epoch-2.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_b] == [1, 2]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["train"] == rb["train"] and ra["dev"] == rb["dev"]
    # The run dir the decoders rely on.
    for name in ("config.yaml", "bpe.model", "model_avg.pt", "metrics.jsonl", "loss_curves.png"):
        assert (straight / name).exists(), name
    row = rows_a[-1]
    assert set(row) >= {"epoch", "train", "dev", "time_s"}
    assert set(row["train"]) >= {"loss", "loss_att", "loss_ctc", "loss_aux"}
    assert set(row["dev"]) >= {"loss", "loss_att", "loss_ctc", "loss_aux", "acc", "aux_acc", "wer"}
    model, tok, cfg = load_for_inference(straight, "cpu")
    assert not model.training and cfg["num_senones"] <= NUM_STANDIN_SENONES
    # model_avg.pt is the mean of the kept checkpoints (both epochs here: keep_best = 2)
    avg = torch.load(straight / "model_avg.pt", weights_only=False)
    assert sorted(avg["averaged_epochs"]) == [1, 2]
    w = "ctc_head.weight"
    assert not (straight / "checkpoints" / "epoch-1.pt").exists() or torch.allclose(
        avg["state_dict"][w], (_params(straight / "checkpoints" / "epoch-1.pt")[w] + a[w]) / 2, atol=1e-6)


def test_train_command_writes_the_run_dir(an4_slice, tmp_path):
    from weakalign.pipeline.cli import cli

    exp = tmp_path / "exp"
    args = ["train", "an4", "--data-root", str(an4_slice.data_root), "--exp-root", str(exp),
            "--config", "ctc_only", "--seed", "7", "--epochs", "1", "--max-steps-per-epoch", "2", "--nj", "1"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = exp / "an4" / "e2e" / "ctc_only_seed7"
    model, tok, cfg = load_for_inference(run_dir, "cpu")
    assert model.decoder is None and cfg["seed"] == 7 and cfg["cuts"] == "fbank"
    assert (exp / "an4" / "done" / "train_ctc_only_seed7.json").exists()


def test_resume_with_a_changed_config_is_refused(an4_standin_ali, tmp_path):
    config = {**load_config("baseline"), **TINY, "epochs": 1}
    kw = dict(device="cpu", max_steps_per_epoch=1, progress=False,
              train_cuts=load_manifest(an4_standin_ali.ali_cuts("train")),
              dev_cuts=load_manifest(an4_standin_ali.ali_cuts("dev")).subset(first=4))
    train(an4_standin_ali, config, tmp_path / "run", **kw)
    with pytest.raises(ValueError, match="enc_hidden"):
        train(an4_standin_ali, {**config, "enc_hidden": 32}, tmp_path / "run", epochs=2, **kw)


def test_training_killed_after_a_checkpoint_resumes_to_the_same_bytes(an4_slice, tmp_path):
    """``kill -9`` of ``weakalign train`` once its first epoch checkpoint is written, then the same
    command again: it resumes from that checkpoint and ends with checkpoints, averaged model and
    metrics byte-identical (timings apart) to an uninterrupted run's."""
    from tests.kill import kill_when
    from weakalign.pipeline.cli import cli

    def args(exp):
        out = ["train", "an4", "--data-root", str(an4_slice.data_root), "--exp-root", str(exp), "--config",
               "ctc_only", "--seed", "7", "--epochs", "4", "--max-steps-per-epoch", "2", "--nj", "1"]
        for key, value in TINY.items():
            out += ["--set", f"{key}={value}"]
        return out

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert CliRunner().invoke(cli, args(straight), catch_exceptions=False).exit_code == 0
    run = "an4/e2e/ctc_only_seed7"
    first = killed / run / "checkpoints" / "epoch-1.pt"
    kill_when(f"from weakalign.pipeline.cli import cli\ncli.main(args={args(killed)!r})\n", first.exists,
              "the first checkpoint")
    assert not (killed / run / "model_avg.pt").exists(), "killed too late: the run had finished"
    result = CliRunner().invoke(cli, args(killed), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resuming" in (killed / "an4" / "log" / "train_ctc_only_seed7.log").read_text()

    def outputs(root):
        files = sorted((root / run / "checkpoints").glob("*.pt")) + [root / run / "model_avg.pt"]
        return {p.name: p.read_bytes() for p in files}

    a, b = outputs(straight), outputs(killed)
    assert a.keys() == b.keys() and "epoch-4.pt" in a
    for name in a:
        assert a[name] == b[name], name

    def metrics(root):
        rows = [json.loads(x) for x in (root / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]

    assert metrics(straight) == metrics(killed) and len(metrics(killed)) == 4


def test_sortagrad_epochs_go_shortest_first_then_bucketed(an4_standin_ali, tmp_path):
    from weakalign.e2e.train import _Loaders

    cuts = load_manifest(an4_standin_ali.ali_cuts("train")).subset(first=40)
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path / "bpe.model", 40)
    config = {**load_config("baseline"), "max_duration": 20.0, "sortagrad_epochs": 1}
    loaders = _Loaders.build(cuts, cuts.subset(first=4), tok, config, seed=1, world_size=1, rank=0)
    durations = {c.id: c.duration for c in cuts}

    def epoch_batches(epoch):
        return [[durations[cid] for cid in batch["cut_ids"]] for batch in loaders.train_epoch(epoch)]

    first, second = epoch_batches(1), epoch_batches(2)
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == sorted(durations.values())
    # Within a batch the collation orders cuts longest-first; across batches SortaGrad goes up.
    assert all(max(a) <= min(b) for a, b in zip(first, first[1:]))
    assert not all(max(a) <= min(b) for a, b in zip(second, second[1:]))


def test_a_damaged_metrics_file_is_named_with_its_line(tmp_path):
    from weakalign.e2e.metrics import read_metrics, write_metrics

    assert read_metrics(tmp_path) == []
    write_metrics(tmp_path, [{"epoch": 1}, {"epoch": 2}])
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('\n{"epoch": 3, "dev": {"wer"\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 4 is not JSON"):
        read_metrics(tmp_path)
