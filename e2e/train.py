"""Training of the E2E model: the ``train`` stage.

One epoch = one pass of a lhotse ``DynamicBucketingSampler``; Adam with linear
warm-up and inverse-sqrt decay, gradient clipping, validation on dev after each
epoch (losses per term, attention accuracy, aux frame accuracy, greedy-CTC WER),
a checkpoint per epoch (model, optimizer, scheduler, RNG states; the sampler is
re-seeded from ``seed`` and the epoch, so resuming after a kill repeats exactly
what an uninterrupted run does), and at the end the ``keep_best`` checkpoints with
the lowest dev loss averaged into ``model_avg.pt``.

Run dir ``exp/<c>/e2e/<run>/``: ``config.yaml``, ``bpe.model``,
``checkpoints/epoch-N.pt``, ``model_avg.pt``, ``metrics.jsonl`` (one JSON object
per epoch), ``loss_curves.png``.

DDP: under ``torchrun`` (``WORLD_SIZE`` set) each process trains its share of the
batches (gloo on CPU, nccl on CUDA); rank 0 writes the files, e.g.::

    torchrun --nproc_per_node 2 .venv/bin/weakalign train an4 --config aux_ls0.5_l3 --device cuda

The trainer knows models only through their interface (``docs/E2E_INTERFACE.md``):
``model(batch) -> (loss, stats)`` per step, ``model.validate(loader, tokenizer)`` per epoch,
``model.export_state_dict(averaged)`` for ``model_avg.pt`` and ``model.plot_extras(...)`` for
figures beyond ``loss_curves.png``; a model with extra training terms (EM-Network) overrides them.

Python API::

    ws = Workspace("an4")
    config = load_config("aux_ls0.5_l3", corpus="an4")
    summary = train(ws, config, run_dir=ws.exp / "e2e" / "aux_ls0.5_l3")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from ..align.loader import alignment_digest, cut_list_digest
from ..pipeline.distributed import is_distributed, resolve_device, setup_distributed, world
from ..pipeline.io import atomic_open, atomic_torch_save
from ..pipeline.report import SkipReport
from ..pipeline.workspace import Workspace
from .checkpoints import average_state_dicts, checkpoint_dir, latest_checkpoint, save_checkpoint
from .data import count_senones, load_cuts, make_loader, make_sortagrad_loader, training_cuts_source, usable_cuts
from .init import initialize
from .metrics import StatsMean, read_metrics, write_metrics
from .build import build_model
from .config import SENONE_AUX_KINDS, reads_alignments
from .plots import plot_loss_curves
from .schedule import Scheduler
from .stopping import StoppingRule
from .tokenizer import Tokenizer, train_bpe

log = logging.getLogger("weakalign")

LOSS_KEYS = ("loss", "loss_att", "loss_ctc", "loss_aux")
# Config keys that may differ between a checkpoint and the run resuming from it.
RESUMABLE_CHANGES = {"epochs", "cuts"}


# ---------------------------------------------------------------- set-up helpers

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(model: torch.nn.Module, config: dict):
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config["lr"]), betas=(0.9, 0.98), eps=1e-9,
                                 weight_decay=float(config.get("weight_decay", 0.0)))
    return optimizer, Scheduler(optimizer, config)


def global_cmvn_from_cuts(cuts, max_cuts: int = 2000) -> dict:
    """Mean/std of the fbank frames of ``cuts`` (fallback when ``global_cmvn.json`` is missing)."""
    total, total_sq, n = None, None, 0
    for cut in list(cuts)[:max_cuts]:
        f = np.asarray(cut.load_features(), dtype=np.float64)
        total = f.sum(0) if total is None else total + f.sum(0)
        total_sq = (f ** 2).sum(0) if total_sq is None else total_sq + (f ** 2).sum(0)
        n += f.shape[0]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 1e-10))
    return {"mean": mean.tolist(), "std": std.tolist(), "frames": n}


# ---------------------------------------------------------------- steps

def train_step(model, batch: dict, optimizer, scheduler, grad_clip: float) -> dict:
    """One optimizer step; returns the model's stats plus ``grad_norm`` and ``lr``."""
    optimizer.zero_grad(set_to_none=True)
    loss, stats = model(batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} on cuts {batch['cut_ids'][:5]}")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    stats["grad_norm"] = float(grad_norm)
    stats["lr"] = optimizer.param_groups[0]["lr"]
    return stats


def fill_loss_keys(stats: dict) -> dict:
    """Every loss key present (``None`` for a term the config does not have)."""
    return {**{k: None for k in LOSS_KEYS}, **stats}


# ---------------------------------------------------------------- checkpoints

def state_dict_sha1(state_dict: dict) -> str:
    """Digest of every tensor's bytes: equal on all DDP ranks iff their replicas are identical."""
    import hashlib

    h = hashlib.sha1()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the loop

def prepare_tokenizer(run_dir: Path, train_cuts, config: dict, rank: int) -> Tokenizer:
    from .data import cut_text

    path = run_dir / "bpe.model"
    if rank == 0 and not path.exists():
        train_bpe([cut_text(c) for c in train_cuts], path, int(config["vocab_size"]))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return Tokenizer(path)


def train(ws: Workspace, config: dict, run_dir: str | Path, *, device: str = "auto",
          epochs: int | None = None, max_steps_per_epoch: int | None = None,
          train_cuts=None, dev_cuts=None, progress: bool = True) -> dict:
    """Train (or resume) a run; returns a summary dict (also for the stage marker).

    ``train_cuts``/``dev_cuts`` default to the workspace's exported alignment cuts when
    they exist, else its fbank cuts. ``max_steps_per_epoch`` shortens epochs (tests, smoke runs).
    """
    run_dir = Path(run_dir)
    config = dict(config)
    if epochs is not None:
        config["epochs"] = int(epochs)
    rank, world_size, local_rank = setup_distributed(device)
    dev = resolve_device(device, local_rank)
    seed = int(config.get("seed", 1))
    seed_everything(seed)

    train_cuts, dev_cuts, tokenizer, report = _training_cuts(ws, config, run_dir, rank, train_cuts, dev_cuts)
    used = list(train_cuts) + list(dev_cuts)
    alignment, cut_list = alignment_digest(used), cut_list_digest(used)

    model = _new_model(ws, config, tokenizer, train_cuts, dev)
    optimizer, scheduler = make_optimizer(model, config)
    if rank == 0:
        with atomic_open(run_dir / "config.yaml", "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    rule = StoppingRule.from_config(config)
    # The plateau lr schedule watches a smooth criterion: error rates sit at 100% while CTC is on
    # its blank plateau, which would halve the lr before learning starts.
    lr_rule = dataclasses.replace(rule, criterion=str(config.get("lr_criterion", "loss_main")))
    keep_best = int(config["keep_best"])
    start_epoch, updates, metrics = _resume(run_dir, config, model, optimizer, scheduler)

    ddp_model = model
    if world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    loaders = _Loaders.build(train_cuts, dev_cuts, tokenizer, config, seed=seed, world_size=world_size, rank=rank)
    grad_clip = float(config["grad_clip"])
    run_start = time.time()

    epoch = start_epoch - 1
    while not rule.should_stop(metrics):
        epoch += 1
        t0 = time.time()
        model.train()
        bar = tqdm(loaders.train_epoch(epoch), desc=f"epoch {epoch}/{rule.max_epochs}",
                   disable=not progress or rank != 0, leave=False)
        with _join(ddp_model, world_size):
            mean, steps, frames = _train_epoch(ddp_model, bar, optimizer, scheduler, grad_clip, max_steps_per_epoch)
        # After the Join: a rank that ran out of batches first must not reduce while another still steps.
        mean.reduce_distributed()
        train_stats = mean.result()
        updates += steps
        dev_stats = model.validate(loaders.dev, tokenizer)
        row = {"epoch": epoch, "train": fill_loss_keys(train_stats), "dev": fill_loss_keys(dev_stats),
               "lr": optimizer.param_groups[0]["lr"], "updates": updates,
               "time_s": round(time.time() - t0, 2), "train_frames": frames}
        metrics.append(row)
        scheduler.end_epoch(improved=lr_rule.epochs_since_best(metrics) == 0)
        _log_epoch(row, train_stats, dev_stats)
        if rank == 0:
            _save_epoch(run_dir, metrics, model, optimizer, scheduler, config, tokenizer,
                        keep=set(rule.best_epochs(metrics, keep_best)) | {epoch})
        if world_size > 1:
            dist.barrier()

    best = rule.best_epochs(metrics, keep_best)
    epochs_run = int(metrics[-1]["epoch"]) if metrics else 0
    summary = {"run_dir": str(run_dir), "epochs": epochs_run, "train_seconds": round(time.time() - run_start, 1),
               "skipped": report.count, "train_cuts": len(train_cuts), "dev_cuts": len(dev_cuts),
               "rank": rank, "world_size": world_size, "model_sha1": state_dict_sha1(model.state_dict())}
    if rank == 0:
        summary.update(_finish_run(run_dir, model, config, tokenizer, rule, metrics, best, world_size=world_size,
                                   device=dev, alignment=alignment, cut_list=cut_list))
    if world_size > 1:
        dist.barrier()
    return summary


def _training_cuts(ws: Workspace, config: dict, run_dir: Path, rank: int, train_cuts, dev_cuts):
    """The train and dev cuts the run uses (the workspace's, unless given; those the tokenizer can
    encode), its BPE tokenizer (trained on train's text by rank 0), and the skips' report. Records
    in ``config`` which cuts were read, the vocabulary size and, for a senone loss, the senone count."""
    if train_cuts is None or dev_cuts is None:
        source = training_cuts_source(ws)
        train_cuts = load_cuts(ws, "train", source) if train_cuts is None else train_cuts
        dev_cuts = load_cuts(ws, "dev", source) if dev_cuts is None else dev_cuts
        config["cuts"] = source
        if config.get("aux") in SENONE_AUX_KINDS and source != "ali":
            raise FileNotFoundError(f"config {config.get('name')} needs senone alignments: "
                                    f"{ws.ali_cuts('train')} not found (run the export stage)")
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = prepare_tokenizer(run_dir, train_cuts, config, rank)
    config["vocab_size_actual"] = tokenizer.vocab_size
    if config.get("aux") in SENONE_AUX_KINDS and not config.get("num_senones"):
        config["num_senones"] = max(count_senones(train_cuts), count_senones(dev_cuts))

    report = SkipReport("train")
    train_cuts = usable_cuts(train_cuts, tokenizer, report)
    dev_cuts = usable_cuts(dev_cuts, tokenizer, report)
    report.log_summary()
    return train_cuts, dev_cuts, tokenizer, report


def _new_model(ws: Workspace, config: dict, tokenizer: Tokenizer, train_cuts, device: torch.device):
    """The config's model, initialised, with the workspace's global CMVN (else the train cuts')."""
    model = build_model(config, tokenizer.vocab_size)
    initialize(model, str(config.get("init", "pytorch")))
    if Path(ws.fbank_stats).exists():
        model.cmvn.load_stats(ws.fbank_stats)
    else:
        log.warning("%s not found: global CMVN from the training cuts", ws.fbank_stats)
        stats = global_cmvn_from_cuts(train_cuts)
        model.cmvn.mean.copy_(torch.tensor(stats["mean"]))
        model.cmvn.std.copy_(torch.tensor(stats["std"]).clamp(min=1e-5))
    return model.to(device)


def _resume(run_dir: Path, config: dict, model, optimizer, scheduler) -> tuple[int, int, list[dict]]:
    """``(first epoch to run, updates so far, metrics so far)``: from the run's last checkpoint,
    whose model, optimizer, scheduler and RNG states are restored, else a fresh start."""
    ckpt_path = latest_checkpoint(run_dir)
    if ckpt_path is None:
        return 1, 0, []
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    changed = {k for k in set(ckpt["config"]) | set(config)
               if k not in RESUMABLE_CHANGES and ckpt["config"].get(k) != config.get(k)}
    if changed:
        raise ValueError(f"{run_dir}: cannot resume from {ckpt_path.name}, the config changed in "
                         f"{sorted(changed)}; use --force (or another --run) to start over")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    log.info("resuming %s from %s", run_dir, ckpt_path.name)
    return ckpt["epoch"] + 1, int(ckpt.get("updates", 0)), [row for row in read_metrics(run_dir)
                                                            if row["epoch"] <= ckpt["epoch"]]


def _train_epoch(ddp_model, bar, optimizer, scheduler, grad_clip: float,
                 max_steps: int | None) -> tuple[StatsMean, int, int]:
    """One pass over the batches of ``bar``: ``(this rank's train stats, steps, frames)``."""
    mean = StatsMean()
    steps = frames = 0
    for step, batch in enumerate(bar):
        if max_steps is not None and step >= max_steps:
            break
        stats = train_step(ddp_model, batch, optimizer, scheduler, grad_clip)
        steps += 1
        mean.add(stats, len(batch["cut_ids"]))
        frames += int(batch["feat_lens"].sum())
        bar.set_postfix(loss=f"{stats['loss']:.3f}")
    return mean, steps, frames


@dataclasses.dataclass
class _Loaders:
    """The run's batches: train (length-sorted for the first ``sortagrad_epochs``, else bucketed and
    re-shuffled per epoch from the seed) and dev."""
    train: object
    train_sampler: object
    sorted_train: object | None
    sortagrad_epochs: int
    dev: object

    @classmethod
    def build(cls, train_cuts, dev_cuts, tokenizer: Tokenizer, config: dict, *, seed: int, world_size: int,
              rank: int) -> "_Loaders":
        max_duration = float(config["max_duration"])
        train, sampler = make_loader(train_cuts, tokenizer, max_duration, shuffle=True, seed=seed,
                                     num_buckets=int(config["num_buckets"]), world_size=world_size, rank=rank)
        dev, _ = make_loader(dev_cuts, tokenizer, max_duration, shuffle=False, world_size=1, rank=0)
        sortagrad_epochs = int(config.get("sortagrad_epochs", 0))
        sorted_train = (make_sortagrad_loader(train_cuts, tokenizer, max_duration, world_size=world_size, rank=rank)
                        if sortagrad_epochs > 0 else None)
        return cls(train, sampler, sorted_train, sortagrad_epochs, dev)

    def train_epoch(self, epoch: int):
        self.train_sampler.set_epoch(epoch)
        return self.sorted_train if epoch <= self.sortagrad_epochs else self.train


def _save_epoch(run_dir: Path, metrics: list[dict], model, optimizer, scheduler, config: dict,
                tokenizer: Tokenizer, keep: set[int]) -> None:
    """Rank 0 after an epoch: its metrics row, its checkpoint, and the checkpoints not in ``keep`` removed."""
    # Metrics before the checkpoint: a kill in between leaves a row that resuming from the
    # previous checkpoint drops, never a checkpoint whose epoch has no row (the resumed
    # run's best epochs, hence its pruning and averaging, would differ).
    write_metrics(run_dir, metrics)
    last = metrics[-1]
    save_checkpoint(checkpoint_dir(run_dir) / f"epoch-{last['epoch']}.pt", epoch=last["epoch"],
                    model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    rng=rng_state(), updates=last["updates"], config=config, vocab_size=tokenizer.vocab_size)
    _prune_checkpoints(run_dir, keep=keep)


def _log_epoch(row: dict, train_stats: dict, dev_stats: dict) -> None:
    log.info("epoch %d: train loss %.3f, dev loss %.3f, dev acc %s, dev aux_acc %s, dev greedy-CTC WER %.1f%% "
             "CER %.1f%%, lr %.2e, %d updates (%.0f s)", row["epoch"], train_stats.get("loss", float("nan")),
             dev_stats["loss"], _fmt(dev_stats.get("acc")), _fmt(dev_stats.get("aux_acc")), dev_stats["wer"],
             dev_stats["cer"], row["lr"], row["updates"], row["time_s"])


def _finish_run(run_dir: Path, model, config: dict, tokenizer: Tokenizer, rule: StoppingRule, metrics: list[dict],
                best: list[int], *, world_size: int, device: torch.device, alignment: str | None,
                cut_list: str | None) -> dict:
    """Rank 0 at the end: the best epochs averaged into ``model_avg.pt``, the figures and
    ``training.json``; returns what the summary adds."""
    epochs_run = int(metrics[-1]["epoch"]) if metrics else 0
    # Again, for a run killed after its last checkpoint but before that epoch's pruning.
    _prune_checkpoints(run_dir, keep=set(best) | {epochs_run})
    averaged = [checkpoint_dir(run_dir) / f"epoch-{e}.pt" for e in best]
    atomic_torch_save({"config": config, "vocab_size": tokenizer.vocab_size,
                       "state_dict": model.export_state_dict(average_state_dicts(averaged)),
                       "averaged_epochs": best}, run_dir / "model_avg.pt")
    if metrics:
        plot_loss_curves(metrics, run_dir / "loss_curves.png", title=run_dir.name)
        model.plot_extras(metrics, run_dir, title=run_dir.name)
    write_training_record(run_dir, config, rule, metrics, best, world_size=world_size, device=device,
                          train_seconds=sum(r["time_s"] for r in metrics), alignment=alignment,
                          cut_list=cut_list)
    log.info("%s: averaged epochs %s into model_avg.pt", run_dir.name, best)
    return {"averaged_epochs": best, "final_dev": metrics[-1].get("dev") if metrics else None,
            "outputs": [run_dir / "model_avg.pt", run_dir / "metrics.jsonl"]}


TRAINING_RECORD = "training.json"


def write_training_record(run_dir: Path, config: dict, rule: StoppingRule, metrics: list[dict], best: list[int], *,
                          world_size: int, device: torch.device, train_seconds: float, alignment: str | None,
                          cut_list: str | None = None) -> dict:
    """``training.json``: what a fair comparison must hold equal (cut list; alignment set where the loss
    reads it; stopping and selection rule) and what it must report (seed, threads, updates, epochs)."""
    last = metrics[-1] if metrics else {}
    record = {
        "config_name": config.get("name"), "seed": int(config.get("seed", 1)),
        "threads": torch.get_num_threads(), "world_size": world_size, "device": str(device),
        "cuts": config.get("cuts"), "cut_list_digest": cut_list, "alignment_digest": alignment,
        "reads_alignments": reads_alignments(config),
        "updates": int(last.get("updates", 0)), "epochs_run": int(last.get("epoch", 0)),
        "stopped_early": bool(metrics) and int(last["epoch"]) < rule.max_epochs,
        "stopping": rule.identity(),
        "selection": {"criterion": rule.criterion, "keep_best": int(config["keep_best"]), "averaged_epochs": best},
        "train_seconds": round(train_seconds, 1),
    }
    with atomic_open(run_dir / TRAINING_RECORD, "w") as f:
        json.dump(record, f, indent=1)
    return record


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _join(ddp_model, world_size: int):
    """DDP's Join context for ranks with uneven batch counts; a no-op in a single process."""
    if world_size > 1:
        return ddp_model.join()
    return contextlib.nullcontext()


def _prune_checkpoints(run_dir: Path, keep: set[int]) -> None:
    for p in checkpoint_dir(run_dir).glob("epoch-*.pt"):
        if int(p.stem.split("-")[1]) not in keep:
            p.unlink()


def clear_run(run_dir: Path) -> None:
    """Remove a run's checkpoints and outputs so it starts over (``--force``)."""
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)
    for name in ("metrics.jsonl", "model_avg.pt", "loss_curves.png", "config.yaml", "bpe.model", TRAINING_RECORD):
        (run_dir / name).unlink(missing_ok=True)


def train_run(ws: Workspace, config: str = "baseline", *, seed: int | None = None, device: str = "auto",
              epochs: int | None = None, overrides: dict | None = None, force: bool = False,
              max_steps_per_epoch: int | None = None, run: str | None = None) -> dict:
    """``weakalign train``: train config ``config`` into ``exp/<c>/e2e/<run>/``.

    ``run`` defaults to ``<config>`` for the default seed and ``<config>_seed<n>`` otherwise.
    An interrupted run resumes from its last epoch checkpoint; ``force`` starts over.
    """
    from ..pipeline.stage import run_stage
    from .config import load_config, run_name

    cfg = load_config(config, corpus=ws.corpus, overrides=overrides)
    if seed is not None:
        cfg["seed"] = int(seed)
    run = run or run_name(config, seed)
    run_dir = ws.exp / "e2e" / run
    distributed = is_distributed()
    if force:
        if distributed:
            raise click_usage_error("--force is not supported under torchrun; remove the run dir instead")
        clear_run(run_dir)
    fn = lambda ws, **kw: train(ws, cfg, run_dir, device=device, epochs=epochs,  # noqa: E731
                                max_steps_per_epoch=max_steps_per_epoch)
    if distributed:
        # Every rank must train; only rank 0 keeps the stage log and marker.
        if world()[0] != 0:
            return fn(ws)
        return run_stage(f"train_{run}", ws, fn, force=True, config=config, seed=seed)
    # The trainer resumes by itself, so the stage always runs (a finished run only re-averages).
    return run_stage(f"train_{run}", ws, fn, force=True, config=config, seed=seed)


def click_usage_error(message: str):
    import click

    return click.UsageError(message)
