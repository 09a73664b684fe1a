"""DDP: two CPU processes (gloo) train a few steps on the real AN4 slice with the same trainer."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from weakalign.e2e.config import load_config
from weakalign.e2e.train import state_dict_sha1

from .standin_alignments import an4_standin_ali  # noqa: F401  (fixture)

TINY = {"conv_channels": 4, "enc_hidden": 16, "enc_proj": 12, "dec_embed": 8, "dec_hidden": 16, "dec_heads": 2,
        "vocab_size": 40, "max_duration": 20.0, "warmup_steps": 2, "epochs": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, ws, run_dir: str, out_dir: str):
    import torch.distributed as dist

    from weakalign.e2e.train import train

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    torch.set_num_threads(1)
    from lhotse import load_manifest

    config = {**load_config("aux_ls0.5_l3"), **TINY}
    dev_cuts = load_manifest(ws.ali_cuts("dev")).subset(first=4)
    try:
        summary = train(ws, config, run_dir, device="cpu", max_steps_per_epoch=2, progress=False,
                        train_cuts=load_manifest(ws.ali_cuts("train")), dev_cuts=dev_cuts)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "outputs"}, f, default=str)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_process_gloo_run_keeps_replicas_identical(an4_standin_ali, tmp_path):
    run_dir = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), an4_standin_ali, str(run_dir), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    # Each rank saw different batches; only all-reduced gradients keep the replicas equal.
    assert ranks[0]["model_sha1"] == ranks[1]["model_sha1"]
    ckpt = torch.load(run_dir / "checkpoints" / "epoch-1.pt", map_location="cpu", weights_only=False)
    assert state_dict_sha1(ckpt["model"]) == ranks[0]["model_sha1"]
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train"]["loss"] > 0 and row["train_frames"] > 0
    assert (run_dir / "model_avg.pt").exists()
