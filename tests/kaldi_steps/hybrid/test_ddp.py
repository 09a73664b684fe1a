"""The hybrid BLSTM's training under DDP: two CPU processes (gloo) on the AN4 slice's real targets
train what one process trains on the same minibatches, and resume as one process does."""

import json
import os
import re
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp

from weakalign.kaldi_steps.hybrid.model import HybridConfig
from weakalign.kaldi_steps.hybrid.train import ChunkTable, TrainConfig, latest_checkpoint, train_hybrid
from weakalign.kaldi_steps.kaldi_io import read_ali_dir
from weakalign.pipeline.io import read_json
from weakalign.pipeline.workspace import Workspace

#: No dropout: the two ranks draw other masks than one process would, the rest must agree to rounding.
MODEL = {"cells": 16, "proj": 8, "layers": 2, "dropout": 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Interrupt(Exception):
    pass


def _rank(rank: int, world_size: int, port: int, args: tuple, out_dir: str, report_dir: str,
          interrupt_at: tuple | None) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    seen, chunks = [], []
    loss = ChunkTable.loss

    def recorded_loss(table, model, ids, device):   # the real loss; notes which chunks this rank took
        chunks.append([int(i) for i in ids])
        return loss(table, model, ids, device)

    def on_step(epoch, step):
        seen.append(epoch)
        if (epoch, step) == interrupt_at:
            raise _Interrupt

    ChunkTable.loss = recorded_loss
    try:
        model, state = train_hybrid(*args, out_dir, on_step=on_step)
        with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"history": state.history, "epochs_trained": sorted(set(seen)), "chunks": chunks,
                       "weights": {k: v.tolist() for k, v in model.state_dict().items()}}, f)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run_ddp(args, out_dir, report_dir, interrupt_at=None) -> list[dict]:
    mp.spawn(_rank, args=(2, _free_port(), args, str(out_dir), str(report_dir), interrupt_at), nprocs=2, join=True)
    return [json.loads((report_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


def _ddp_setup(slice_targets, epochs: int):
    """Train/held-out data of the slice, and a batch size whose last minibatch has one chunk: rank 1
    then has nothing of it and must still join the gradient averaging."""
    targets, num_pdfs = slice_targets
    utts = sorted(targets)
    train = {u: targets[u] for u in utts[:24]}
    held = {u: targets[u] for u in utts[24:30]}
    base = dict(epochs=epochs, lr=3e-3, lr_final=1e-3, chunk_width=20, left_context=10, right_context=10,
                seed=1, threads=1)
    chunks = len(ChunkTable(train, TrainConfig(**base)))
    batch_size = next(b for b in range(8, 20) if chunks % b == 1)
    return train, held, HybridConfig(num_pdfs=num_pdfs, **MODEL), TrainConfig(batch_size=batch_size, **base)


def _assert_same_training(single_state, single_model, ranks):
    for r in ranks:
        for one, two in zip(single_state.history, r["history"]):
            assert one["epoch"] == two["epoch"] and one["lr"] == two["lr"]
            for key in ("train_loss", "heldout_loss", "train_frame_acc", "heldout_frame_acc"):
                assert two[key] == pytest.approx(one[key], rel=2e-4, abs=1e-6), key
    # The replicas are the same weights (DDP's averaged gradients), and those of the single process.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    for k, v in single_model.state_dict().items():
        assert torch.allclose(torch.tensor(ranks[0]["weights"][k]), v, atol=1e-4), k


@pytest.mark.timeout(120)
def test_two_gloo_ranks_train_what_one_process_trains(slice_targets, tmp_path):
    train, held, model_cfg, cfg = _ddp_setup(slice_targets, epochs=1)
    single_model, single = train_hybrid(train, held, model_cfg, cfg, tmp_path / "single")
    ranks = _run_ddp((train, held, model_cfg, cfg), tmp_path / "ddp", tmp_path)
    _assert_same_training(single, single_model, ranks)
    # Each rank took its share of every minibatch: between them every chunk once, rank 1 nothing of
    # the last one-chunk minibatch (it ran that chunk with weight 0 to join the averaging).
    steps = len(ranks[0]["chunks"])
    assert steps == len(ranks[1]["chunks"]) == -(-len(ChunkTable(train, cfg)) // cfg.batch_size)
    assert len(ranks[0]["chunks"][-1]) == 1 and ranks[1]["chunks"][-1] == ranks[0]["chunks"][-1]
    taken = [i for r in ranks for ids in r["chunks"][:-1] for i in ids] + ranks[0]["chunks"][-1]
    assert sorted(taken) == list(range(len(ChunkTable(train, cfg))))
    assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(ranks[0]["chunks"], ranks[1]["chunks"][:-1]))
    # Training moved the weights: one epoch's held-out loss is far below a fresh network's ln(num_pdfs).
    assert single.history[0]["heldout_loss"] < 0.95 * torch.log(torch.tensor(float(model_cfg.num_pdfs)))
    # Rank 0 alone wrote, once: the epoch checkpoint holds the replicas' weights.
    ckpt = torch.load(latest_checkpoint(tmp_path / "ddp"), weights_only=False)
    assert ckpt["state"]["history"] == ranks[0]["history"]
    for k, v in ckpt["model"].items():
        assert v.tolist() == ranks[0]["weights"][k], k
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["checkpoints", "final.pt", "train_history.json"]


@pytest.mark.timeout(120)
def test_ddp_run_killed_mid_epoch_resumes_from_its_last_checkpoint(slice_targets, tmp_path):
    train, held, model_cfg, cfg = _ddp_setup(slice_targets, epochs=2)
    args = (train, held, model_cfg, cfg)
    with pytest.raises(Exception, match="_Interrupt"):
        _run_ddp(args, tmp_path / "ddp", tmp_path, interrupt_at=(2, 3))
    assert latest_checkpoint(tmp_path / "ddp").name == "epoch-1.pt"   # epoch 2 never finished
    ranks = _run_ddp(args, tmp_path / "ddp", tmp_path)
    assert all(r["epochs_trained"] == [2] for r in ranks)            # resumed, not started over
    single_model, single = train_hybrid(*args, tmp_path / "single")
    assert [h["epoch"] for h in ranks[0]["history"]] == [1, 2]
    _assert_same_training(single, single_model, ranks)


def _cli_rank(rank: int, world_size: int, port: int, argv: list, report_dir: str) -> None:
    import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst
    import torch.distributed as dist

    from weakalign.pipeline.cli import cli

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    try:
        cli.main(argv, standalone_mode=False)
        with open(os.path.join(report_dir, f"cli{rank}.done"), "w") as f:
            f.write("ok")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_hybrid_command_under_torchrun_ranks(an4_slice_tri1, tmp_path):
    """``torchrun --nproc-per-node 2 weakalign hybrid ...`` as two gloo ranks: both train each pass,
    rank 0 alone realigns between the passes and keeps the log and the marker; a second launch is
    "already done" on rank 0 and the other rank, told so, ends too."""
    src = an4_slice_tri1
    ws = Workspace(src.corpus, data_root=src.data_root, exp_root=tmp_path / "exp")
    for name in ("tri1", "tri1_ali"):
        shutil.copytree(src.exp / name, ws.exp / name)
    argv = ["hybrid", "an4", "--data-root", str(src.data_root), "--exp-root", str(tmp_path / "exp"), "--nj", "1",
            "--device", "cpu", "--threads", "1", "--epochs", "1", "--passes", "2", "--no-decode",
            "--speed-perturb", "none", "--cells", "16", "--proj", "8", "--layers", "1", "--batch-size", "16",
            "--chunk-width", "20", "--left-context", "10", "--right-context", "10"]
    markers = []
    for launch in (1, 2):
        mp.spawn(_cli_rank, args=(2, _free_port(), argv, str(tmp_path)), nprocs=2, join=True)
        assert all((tmp_path / f"cli{r}.done").exists() for r in (0, 1))
        for r in (0, 1):
            (tmp_path / f"cli{r}.done").unlink()
        markers.append((ws.done_dir / "hybrid.json").read_text())
    assert markers[0] == markers[1]                                          # the second launch: already done
    stage_log = (ws.log_dir / "hybrid.log").read_text()
    assert stage_log.count("rank 0 of 2 (DDP)") == 2                       # one training per pass
    assert "rank 1 of 2" not in stage_log and stage_log.count("stage hybrid: start") == 1
    pass1, final = read_ali_dir(ws.exp / "hybrid_ali_pass1"), read_ali_dir(ws.exp / "hybrid_ali")
    diag = read_json(ws.exp / "hybrid" / "diagnostics.json")
    # Pass 2 realigns every utterance pass 1 aligned; a 1-epoch, 16-cell network loses a few (each one
    # a named skip), so the counts are checked, not that both passes align the same utterances.
    assert set(final) <= set(pass1) and len(pass1) >= 0.9 * len(read_ali_dir(ws.exp / "tri1_ali"))
    assert diag["utterances"] == len(pass1) and diag["aligned"] == len(final) == len(pass1) - diag["failed"]
    assert len(final) >= 0.9 * len(pass1)
    assert diag["source"] == "hybrid_ali_pass1" and diag["epochs_run"] == 1
    assert read_json(ws.done_dir / "hybrid.json")["summary"]["aligned"] == len(final)


def test_align_under_torchrun_runs_the_hybrid_stage_alone(tmp_path):
    from click.testing import CliRunner

    from weakalign.pipeline.cli import cli

    result = CliRunner().invoke(cli, ["align", "an4", "--from", "tri1", "--exp-root", str(tmp_path)],
                                env={"WORLD_SIZE": "2"})
    assert result.exit_code == 2 and "under torchrun, align runs the hybrid stage alone" in result.output


@pytest.mark.timeout(240)
def test_hybrid_procs_launches_its_own_ranks(an4_slice_tri1, tmp_path):
    """``weakalign hybrid --procs 2`` without torchrun: the stage starts two gloo ranks itself and
    trains as under torchrun (rank 0 logs, realigns and marks); --procs is where the work runs, so
    ``align`` asking the same stage with another --hybrid-procs finds it done. A rank's failure
    (here a missing input) ends the command with that one-line message."""
    from click.testing import CliRunner

    from weakalign.pipeline.cli import cli

    src = an4_slice_tri1
    ws = Workspace(src.corpus, data_root=src.data_root, exp_root=tmp_path / "exp")
    roots = ["--data-root", str(src.data_root), "--exp-root", str(tmp_path / "exp")]
    options = ["--device", "cpu", "--threads", "1", "--epochs", "1", "--passes", "1", "--no-decode",
               "--speed-perturb", "none", "--cells", "16", "--proj", "8", "--layers", "1", "--batch-size", "16",
               "--chunk-width", "20", "--left-context", "10", "--right-context", "10"]
    shutil.copytree(src.exp / "tri1", ws.exp / "tri1")
    missing = CliRunner().invoke(cli, ["hybrid", "an4", *roots, "--nj", "1", "--procs", "2", *options])
    # Both ranks miss the file; the error is the first rank's to fail, whichever that is.
    assert missing.exit_code == 1 and "tri1_ali" in missing.output
    assert re.search(r"rank [01] failed: FileNotFoundError", missing.output), missing.output
    assert len(missing.output.strip().splitlines()) == 1, missing.output
    shutil.copytree(src.exp / "tri1_ali", ws.exp / "tri1_ali")
    run = CliRunner().invoke(cli, ["hybrid", "an4", *roots, "--nj", "1", "--procs", "2", *options])
    assert run.exit_code == 0, run.output
    stage_log = (ws.log_dir / "hybrid.log").read_text()
    assert stage_log.count("rank 0 of 2 (DDP)") == 1 and "rank 1 of 2" not in stage_log
    marker = (ws.done_dir / "hybrid.json").read_text()
    recorded = json.loads(marker)
    assert "procs" not in recorded["options"] and "procs" not in recorded["requested"]
    assert read_json(ws.exp / "hybrid" / "diagnostics.json")["aligned"] == len(read_ali_dir(ws.exp / "hybrid_ali"))
    again = CliRunner().invoke(cli, ["align", "an4", *roots, "--nj", "1", "--from", "hybrid", "--stop-after", "hybrid",
                                     "--hybrid-procs", "1", *[f"--hybrid-{o[2:]}" if o.startswith("--") else o
                                                              for o in options]])
    assert again.exit_code == 0, again.output
    assert (ws.done_dir / "hybrid.json").read_text() == marker               # already done: same request


def test_hybrid_procs_on_cuda_needs_a_gpu_per_rank(tmp_path):
    from click.testing import CliRunner

    from weakalign.pipeline.cli import cli

    result = CliRunner().invoke(cli, ["hybrid", "an4", "--exp-root", str(tmp_path), "--procs", "2", "--device", "cuda"])
    assert result.exit_code == 2 and f"2 ranks on CUDA need 2 GPUs, this machine has {torch.cuda.device_count()}" \
        in result.output
