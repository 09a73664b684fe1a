"""Frame-level cross-entropy training of the hybrid BLSTM on senone (pdf-id) alignments.

As Kaldi's nnet3 BLSTM recipes train: utterances are cut into chunks of
``chunk_width`` frames, each seen with up to ``left_context``/``right_context``
extra frames of context, and the loss is taken only on the chunk's own frames.
Adam, dropout, a learning rate that decays geometrically from ``lr`` to ``lr_final``
over the epoch budget (Kaldi's initial/final effective learning rate) and is also
halved whenever the held-out loss stops improving, and early stopping after
``patience`` epochs without improvement; the final model is the best epoch on the
held-out utterances.

Every epoch ends with a checkpoint (``checkpoints/epoch-N.pt``: weights, optimiser,
schedule, history). A rerun resumes from the newest one and, because each epoch's
shuffling and dropout are seeded by ``(seed, epoch)`` alone, ends with exactly the
weights an uninterrupted run would have.

Under ``torchrun`` the ranks share each minibatch and DDP averages their gradients, so a step is the
single-process step on the same minibatch (:func:`train_hybrid`); rank 0 writes the checkpoints.

>>> import numpy as np
>>> reconcile_frames("u1", np.array([3, 3, 4]), 4).tolist()   # one frame short: pad with edge label
[3, 3, 4, 4]
>>> cfg = TrainConfig(epochs=3, lr=1e-3, lr_final=1e-4)
>>> [round(scheduled_lr(cfg, e), 6) for e in (1, 2, 3)]
[0.001, 0.000316, 0.0001]
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from weakalign.pipeline.distributed import all_reduce_sum, barrier, resolve_device, setup_distributed
from weakalign.pipeline.io import atomic_torch_save, write_json

from .model import HybridBLSTM, HybridConfig, chunk_windows, windows_to_batch

log = logging.getLogger("weakalign")

IGNORE = -100


class FrameMismatch(ValueError):
    """An alignment whose length differs from the feature frame count by more than the tolerance."""


def reconcile_frames(utt_id: str, labels: np.ndarray, num_frames: int, max_mismatch: int = 2) -> np.ndarray:
    """Make ``labels`` exactly ``num_frames`` long: the one policy for fbank-vs-alignment lengths.

    Alignments come from MFCCs and the network sees fbank frames; both use a 10 ms
    shift, so they differ by at most a frame or two (``snip_edges`` / window rounding).
    Policy: a short alignment is **padded by repeating its last label**, a long one is
    **trimmed at the end**; a difference above ``max_mismatch`` frames means the two
    do not describe the same audio and raises :class:`FrameMismatch` naming the utterance.
    """
    labels = np.asarray(labels)
    diff = num_frames - len(labels)
    if abs(diff) > max_mismatch or len(labels) == 0:
        raise FrameMismatch(f"{utt_id}: alignment has {len(labels)} frames but the features have "
                            f"{num_frames} (tolerance {max_mismatch})")
    if diff > 0:
        return np.concatenate([labels, np.full(diff, labels[-1], dtype=labels.dtype)])
    return labels[:num_frames]


def heldout_split(utt2spk: dict[str, str], fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split utterances into ``(train, heldout)`` by whole speakers, about ``fraction`` held out.

    Speakers are drawn in a seeded random order until the held-out share reaches
    ``fraction``; with a single speaker, utterances are drawn instead.

    >>> tr, ho = heldout_split({f"u{i}": f"s{i % 4}" for i in range(40)}, 0.2)
    >>> len(ho), len(set(tr) & set(ho))
    (10, 0)
    """
    utts = sorted(utt2spk)
    if not utts or fraction <= 0:
        return utts, []
    speakers = sorted(set(utt2spk.values()))
    rng = random.Random(seed)
    want = max(1, round(fraction * len(utts)))
    held: set[str] = set()
    if len(speakers) > 1:
        rng.shuffle(speakers)
        by_spk: dict[str, list[str]] = {}
        for u in utts:
            by_spk.setdefault(utt2spk[u], []).append(u)
        for spk in speakers[:-1]:  # never hold out every speaker
            if len(held) >= want:
                break
            held.update(by_spk[spk])
    else:
        held.update(rng.sample(utts, min(want, len(utts) - 1)))
    return [u for u in utts if u not in held], sorted(held)


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32            # chunks per minibatch
    lr: float = 1e-3
    lr_final: float | None = None   # learning rate of the last epoch (None: constant lr)
    lr_decay: float = 0.5           # factor applied when the held-out loss does not improve
    patience: int = 2               # epochs without held-out improvement before stopping
    chunk_width: int = 40
    left_context: int = 20
    right_context: int = 20
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "cpu"
    #: Intra-op threads of the training (None: :func:`default_threads`, ``OMP_NUM_THREADS`` else
    #: every core; see RESULTS.md for 1 vs 2 threads idle and loaded). Where the work runs, like ``device``: not part
    #: of what a run produces.
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainState:
    """What a checkpoint holds besides weights: where the schedule stands."""

    epoch: int = 0                  # epochs completed
    lr_scale: float = 1.0           # product of the plateau halvings so far
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


def scheduled_lr(cfg: TrainConfig, epoch: int, plateau_scale: float = 1.0) -> float:
    """Learning rate of ``epoch`` (1-based): geometric from ``lr`` to ``lr_final``, times the plateau halvings."""
    if cfg.lr_final is None or cfg.epochs <= 1:
        return cfg.lr * plateau_scale
    progress = min(epoch - 1, cfg.epochs - 1) / (cfg.epochs - 1)
    return cfg.lr * (cfg.lr_final / cfg.lr) ** progress * plateau_scale


def _chunks(data: dict[str, tuple[np.ndarray, np.ndarray]], cfg: TrainConfig) -> list[tuple[str, int, int, int, int]]:
    return [(utt, *w) for utt in sorted(data)
            for w in chunk_windows(len(data[utt][0]), cfg.chunk_width, cfg.left_context, cfg.right_context)]


def _batch_loss(model: HybridBLSTM, data, batch_chunks, device, packed: bool = False) -> tuple[torch.Tensor, int, int]:
    """Summed CE over the chunks' own frames, number of those frames, number correct.

    The reference path of :meth:`ChunkTable.loss` (the trainer before issue #17): a minibatch assembled
    in Python chunk by chunk; with ``packed`` the network runs as it then did, over a packed batch."""
    feats, targets, lens = [], [], []
    for utt, w0, w1, c0, c1 in batch_chunks:
        x, y = data[utt]
        feats.append(torch.from_numpy(x[w0:w1]))
        t = np.full(w1 - w0, IGNORE, dtype=np.int64)
        t[c0 - w0:c1 - w0] = y[c0:c1]      # loss only on the chunk's central frames
        targets.append(torch.from_numpy(t))
        lens.append(w1 - w0)
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(device)
    y = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=IGNORE).to(device)
    logits = (model.forward_packed if packed else model)(x, torch.tensor(lens))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    mask = y != IGNORE
    correct = int((logits.detach().argmax(-1)[mask] == y[mask]).sum())
    return loss, int(mask.sum()), correct


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set, else every core: ``make align`` runs the hybrid alone, and on
    an idle 2-core machine 2 threads train 1.48x faster than 1 (RESULTS.md). On a shared machine
    set ``OMP_NUM_THREADS`` (or ``--threads``): oversubscribed threads ran 4x slower under load."""
    env = os.environ.get("OMP_NUM_THREADS")
    return max(1, int(env)) if env else max(1, os.cpu_count() or 1)


class ChunkTable:
    """Every training chunk as precomputed index rows, so a minibatch is two tensor gathers.

    The features of all utterances are concatenated once into one ``(F + 1, D)`` tensor (the last row
    zeros: padding); chunk ``i`` is row ``index[i]`` of frame indices into it (its window, padded with
    ``F``) and row ``targets[i]`` of pdf-ids (:data:`IGNORE` on context and padding). A batch is
    ``feats[index[ids, :T]]``: the same tensors :func:`_batch_loss` assembles chunk by chunk in
    Python (the reference path, kept for tests and the benchmark's before/after).
    """

    def __init__(self, data: dict[str, tuple[np.ndarray, np.ndarray]], cfg: TrainConfig):
        self.chunks = _chunks(data, cfg)
        utts = sorted(data)
        offsets, start = {}, 0
        for u in utts:
            offsets[u] = start
            start += len(data[u][0])
        width = max((w1 - w0 for _, w0, w1, _, _ in self.chunks), default=1)
        self.feats = torch.from_numpy(np.concatenate([data[u][0] for u in utts] +
                                                     [np.zeros((1, next(iter(data.values()))[0].shape[1]),
                                                               np.float32)]).astype(np.float32, copy=False))
        n = len(self.chunks)
        index = np.full((n, width), start, dtype=np.int64)
        targets = np.full((n, width), IGNORE, dtype=np.int64)
        lens = np.zeros(n, dtype=np.int64)
        for i, (utt, w0, w1, c0, c1) in enumerate(self.chunks):
            index[i, :w1 - w0] = np.arange(offsets[utt] + w0, offsets[utt] + w1)
            targets[i, c0 - w0:c1 - w0] = data[utt][1][c0:c1]
            lens[i] = w1 - w0
        self.index, self.targets, self.lens = (torch.from_numpy(index), torch.from_numpy(targets),
                                               torch.from_numpy(lens))
        self.chunk_frames = (self.targets != IGNORE).sum(1)

    def frames(self, ids) -> int:
        """The frames chunks ``ids`` take the loss on (their own, context and padding apart)."""
        return int(self.chunk_frames[torch.as_tensor(ids, dtype=torch.long)].sum())

    def __len__(self) -> int:
        return len(self.chunks)

    def batch(self, ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(feats (B, T, D), targets (B, T), lens (B,))`` of chunks ``ids``, ``T`` their longest window."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        lens = self.lens[ids]
        width = int(lens.max())
        return self.feats[self.index[ids, :width]], self.targets[ids, :width], lens

    def loss(self, model: HybridBLSTM, ids, device) -> tuple[torch.Tensor, int, int]:
        """As :func:`_batch_loss` of the same chunks: summed CE over their own frames, frames, correct."""
        x, y, lens = self.batch(ids)
        x, y = x.to(device), y.to(device)
        logits = model(x, lens)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                 ignore_index=IGNORE, reduction="sum")
        mask = y != IGNORE
        correct = int((logits.detach().argmax(-1)[mask] == y[mask]).sum())
        return loss, int(mask.sum()), correct


@torch.no_grad()
def evaluate(model: HybridBLSTM, data, cfg: TrainConfig, rank: int = 0, world_size: int = 1) -> dict:
    """Per-frame CE and frame accuracy on whole utterances, evaluated chunk-wise as in training.

    Under DDP each of the ``world_size`` ranks evaluates every ``world_size``-th utterance and the
    sums are all-reduced, so every rank gets the same figures (early stopping agrees)."""
    model.eval()
    device = next(model.parameters()).device
    tot_loss, frames, correct = 0.0, 0, 0
    for utt in sorted(data)[rank::world_size]:
        x, y = data[utt]
        windows = chunk_windows(len(x), cfg.chunk_width, cfg.left_context, cfg.right_context)
        batch, lens = windows_to_batch(torch.from_numpy(x), windows)
        logits = model(batch.to(device), lens)
        out = torch.cat([logits[i, c0 - w0:c1 - w0] for i, (w0, _, c0, c1) in enumerate(windows)]).float()
        target = torch.from_numpy(y).to(device)
        tot_loss += float(torch.nn.functional.cross_entropy(out, target, reduction="sum"))
        correct += int((out.argmax(-1) == target).sum())
        frames += len(y)
    if world_size > 1:
        tot_loss, frames, correct = all_reduce_sum([tot_loss, frames, correct])
        frames, correct = int(frames), int(correct)
    return {"loss": tot_loss / max(frames, 1), "frame_acc": correct / max(frames, 1), "frames": frames}


def _checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "checkpoints" / f"epoch-{epoch}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / "checkpoints").glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return found[-1] if found else None


def _save(path: Path, obj: dict) -> None:
    atomic_torch_save(obj, path)


def _same_run(ckpt: dict, model_cfg: HybridConfig, cfg: TrainConfig, targets_id: str | None = None) -> bool:
    """A checkpoint can be resumed when only the device changed, or the epoch budget of a constant-lr run
    (with ``lr_final`` the budget shapes the whole schedule), and it was trained on the same targets."""
    ignore = ("device", "threads") if cfg.lr_final is not None else ("epochs", "device", "threads")
    old = {k: v for k, v in ckpt["train_config"].items() if k not in ignore}
    new = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
    return (ckpt["model_config"] == model_cfg.to_dict() and old == new
            and ckpt.get("targets_id") == targets_id)


def build_model(model_cfg: HybridConfig, cmvn: dict | None, device: torch.device) -> HybridBLSTM:
    model = HybridBLSTM(model_cfg)
    if cmvn is not None:
        model.set_cmvn(cmvn["mean"], cmvn["std"])
    return model.to(device)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> HybridBLSTM:
    """Load ``final.pt`` (or a checkpoint) written by :func:`train_hybrid`, in eval mode."""
    ckpt = torch.load(path, map_location=resolve_device(str(device)), weights_only=False)
    model = HybridBLSTM(HybridConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(str(device))).eval()


def train_hybrid(train_data: dict[str, tuple[np.ndarray, np.ndarray]],
                 heldout_data: dict[str, tuple[np.ndarray, np.ndarray]],
                 model_cfg: HybridConfig, cfg: TrainConfig, out_dir: str | os.PathLike, *,
                 cmvn: dict | None = None, targets_id: str | None = None,
                 on_step: Callable[[int, int], None] | None = None,
                 init_from: str | os.PathLike | None = None) -> tuple[HybridBLSTM, TrainState]:
    """Train (or resume training) and write ``out_dir/final.pt`` = the best held-out epoch.

    ``init_from``: a ``final.pt`` of the same architecture whose weights a fresh run starts from
    (a warm start: the hybrid stage's later passes) instead of random ones; a resumed run ignores it.
    Give it a part in ``targets_id`` so a checkpoint of another start is not resumed.

    ``train_data``/``heldout_data`` map utterance ids to ``(fbank (T, D) float32, pdf-ids (T,))``.
    ``targets_id`` names the alignments the targets come from (e.g. their content hash): a
    checkpoint trained on other targets is not resumed. ``on_step(epoch, step)`` is called after
    every optimiser step (progress hooks, tests that interrupt a run). Returns the best model (eval mode) and the final schedule state.

    Under ``torchrun`` (``WORLD_SIZE`` > 1; :mod:`weakalign.pipeline.distributed`) every rank calls
    this with the same data: each takes every ``world_size``-th chunk of each minibatch, DDP averages
    the gradients, and rank 0 alone writes the checkpoints and ``final.pt`` (the others' ``out_dir``
    must be the same shared directory). ``batch_size`` stays the chunks of one optimiser step over
    all ranks, and each rank's loss is divided by that step's frames on all ranks, so a step is the
    single-process step on the same minibatch (dropout masks and float summation order apart).
    """
    out_dir = Path(out_dir)
    rank, world_size, local_rank = setup_distributed(cfg.device)
    device = resolve_device(cfg.device, local_rank if world_size > 1 else None)
    torch.manual_seed(cfg.seed)   # the initial weights, so two runs with the same options agree
    model = build_model(model_cfg, cmvn, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = TrainState()
    best_path = out_dir / "checkpoints" / "best.pt"

    resume = latest_checkpoint(out_dir)
    ckpt = torch.load(resume, map_location=device, weights_only=False) if resume is not None else None
    stale = ckpt is not None and not _same_run(ckpt, model_cfg, cfg, targets_id)
    if stale:
        log.warning("hybrid: %s was written with other options or targets (%s, %s, targets %s); starting afresh",
                    resume, ckpt["model_config"], ckpt["train_config"], ckpt.get("targets_id"))
        ckpt = None
    barrier()   # every rank has read the checkpoint before rank 0 removes a stale one
    if stale and rank == 0:
        shutil.rmtree(out_dir / "checkpoints")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState(**ckpt["state"])
        log.info("hybrid: resuming from %s (epoch %d done)", resume, state.epoch)
    elif init_from is not None:
        start = torch.load(init_from, map_location=device, weights_only=False)
        if start["model_config"] != model_cfg.to_dict():
            raise ValueError(f"hybrid: cannot warm-start from {init_from}: its model {start['model_config']} "
                             f"is not {model_cfg.to_dict()}")
        model.load_state_dict(start["model"])
        log.info("hybrid: starting from the weights of %s (warm start)", init_from)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or default_threads())
    try:
        return _train_loop(train_data, heldout_data, model_cfg, cfg, out_dir, model, optimizer, state,
                           best_path, device, targets_id, on_step, rank, world_size)
    finally:
        torch.set_num_threads(threads_before)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int = 0) -> int:
    """The torch seed of ``epoch`` (dropout) on ``rank``: ``(seed, epoch)`` alone on rank 0, as in a
    single process, so a resumed epoch replays exactly; other ranks draw other dropout masks.

    >>> epoch_seed(TrainConfig(seed=1), 2), epoch_seed(TrainConfig(seed=1), 2, rank=1)
    (100005, 1000100005)
    """
    return cfg.seed * 100003 + epoch + rank * 1_000_000_000


def train_step(net, model: HybridBLSTM, optimizer, table: ChunkTable, batch, grad_clip: float, device,
               rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, int, int]:
    """One optimiser step on minibatch ``batch`` (chunk ids of ``table``): this rank takes every
    ``world_size``-th chunk and ``net`` (``model``, or its DDP wrapper) averages the gradients.
    Returns this rank's summed loss, frames and correct frames."""
    mine = batch[rank::world_size]   # the whole minibatch in a single process
    # A rank with no chunk of a short last minibatch still joins DDP's gradient averaging, with nothing.
    loss, frames, correct = table.loss(net, mine or batch[:1], device)
    if not mine:
        loss, frames, correct = loss * 0.0, 0, 0
    optimizer.zero_grad()
    # Per frame of the whole minibatch: DDP's mean over ranks times world_size is the sum over ranks.
    (loss / (frames if world_size == 1 else table.frames(batch)) * world_size).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss, frames, correct


def _train_loop(train_data, heldout_data, model_cfg, cfg, out_dir, model, optimizer, state, best_path, device,
                targets_id, on_step, rank=0, world_size=1):
    table = ChunkTable(train_data, cfg)
    chunks = table.chunks
    num_frames = sum(len(y) for _, y in train_data.values())
    log.info("hybrid: %d train utterances (%d frames, %d chunks), %d held-out utterances, %d threads%s",
             len(train_data), num_frames, len(chunks), len(heldout_data), torch.get_num_threads(),
             f", rank {rank} of {world_size} (DDP)" if world_size > 1 else "")
    net = model if world_size == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        lr = scheduled_lr(cfg, epoch, state.lr_scale)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Seeded by (seed, epoch) only, so a resumed epoch replays exactly.
        torch.manual_seed(epoch_seed(cfg, epoch, rank))
        order = random.Random(cfg.seed * 100003 + epoch).sample(range(len(chunks)), len(chunks))
        net.train()
        tot_loss, tot_frames, tot_correct = 0.0, 0, 0
        steps = range(0, len(order), cfg.batch_size)
        for step, start in enumerate(tqdm(steps, desc=f"hybrid epoch {epoch}", leave=False, disable=rank != 0)):
            batch = order[start:start + cfg.batch_size]
            loss, frames, correct = train_step(net, model, optimizer, table, batch, cfg.grad_clip, device,
                                               rank, world_size)
            tot_loss, tot_frames, tot_correct = tot_loss + loss.item(), tot_frames + frames, tot_correct + correct
            if on_step is not None:
                on_step(epoch, step)
        if world_size > 1:
            tot_loss, tot_frames, tot_correct = all_reduce_sum([tot_loss, tot_frames, tot_correct])
        held = (evaluate(model, heldout_data, cfg, rank, world_size) if heldout_data
                else {"loss": tot_loss / tot_frames, "frame_acc": tot_correct / tot_frames})
        record = {"epoch": epoch, "lr": lr, "train_loss": tot_loss / max(tot_frames, 1),
                  "train_frame_acc": tot_correct / max(tot_frames, 1),
                  "heldout_loss": held["loss"], "heldout_frame_acc": held["frame_acc"]}
        state.history.append(record)
        log.info("hybrid epoch %d: lr %.2e train loss %.3f acc %.3f | held-out loss %.3f acc %.3f",
                 epoch, lr, record["train_loss"], record["train_frame_acc"],
                 held["loss"], held["frame_acc"])
        improved = held["loss"] < state.best_loss
        if improved:
            state.best_loss, state.best_epoch, state.bad_epochs = held["loss"], epoch, 0
        else:
            state.bad_epochs += 1
            state.lr_scale *= cfg.lr_decay
            state.stopped_early = state.bad_epochs >= cfg.patience
            if state.stopped_early:
                log.info("hybrid: early stop after epoch %d (best epoch %d)", epoch, state.best_epoch)
        state.epoch = epoch
        if rank == 0:
            if improved:
                _save(best_path, {"model_config": model_cfg.to_dict(), "model": model.state_dict(), "epoch": epoch})
            _save(_checkpoint_path(out_dir, epoch), {
                "model_config": model_cfg.to_dict(), "train_config": cfg.to_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "state": asdict(state), "targets_id": targets_id})
            for old in (out_dir / "checkpoints").glob("epoch-*.pt"):
                if old.name != f"epoch-{epoch}.pt":
                    old.unlink()

    barrier()   # rank 0 has written best.pt
    best = torch.load(best_path, map_location=device, weights_only=False)
    if rank == 0:
        _save(out_dir / "final.pt", {**best, "train_config": cfg.to_dict(), "history": state.history})
        write_json(out_dir / "train_history.json", asdict(state))
    model.load_state_dict(best["model"])
    return model.eval(), state
