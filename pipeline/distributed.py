"""``torchrun`` DDP for the two neural trainings (the hybrid BLSTM and the E2E model).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process is one rank: the process
group is ``nccl`` on CUDA and ``gloo`` on CPU, every rank trains on its share of the data, DDP
averages the gradients, and rank 0 alone writes files (checkpoints, markers, logs). Without
``torchrun`` every function here is a no-op or returns the single-process answer, so the
trainers run as they always did. Below both trainers (imports neither).

>>> world()
(0, 1, 0)
>>> resolve_device("cpu"), resolve_device("cuda", local_rank=1)
(device(type='cpu'), device(type='cuda', index=1))
>>> all_reduce_sum([1.5, 2])   # one process: the values themselves
[1.5, 2.0]
"""

from __future__ import annotations

import datetime
import logging
import os
import uuid

import torch
import torch.distributed as dist

#: How long ranks wait in :func:`wait_for_rank0` while rank 0 alone works (the hybrid's
#: realignment and WER decode between and after its trainings): hours on a large corpus, far
#: beyond the process group's default 30 minutes. A rank that dies ends the others sooner:
#: ``torchrun`` stops the whole group when one of its processes fails.
RANK0_WORK_TIMEOUT = datetime.timedelta(hours=48)

_rank0_group = None


def world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as ``torchrun`` set them (``(0, 1, 0)`` without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world()[1] > 1


def resolve_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA when available; with ``local_rank``, CUDA is that rank's GPU (``cuda:N``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(device)


def setup_distributed(device: str) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; initialises ``torch.distributed`` when ``WORLD_SIZE`` > 1
    (once per process: a second call returns the same group's ranks)."""
    rank, world_size, local_rank = world()
    if world_size <= 1:
        return rank, world_size, local_rank
    if not dist.is_initialized():
        use_cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def active() -> bool:
    """Whether a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def wait_for_rank0() -> None:
    """A barrier that waits up to :data:`RANK0_WORK_TIMEOUT`: the other ranks call it where rank 0
    works alone, rank 0 when it is done. On a side ``gloo`` group, so the training's (possibly
    ``nccl``) group keeps its own timeout."""
    global _rank0_group
    if not active():
        return
    if _rank0_group is None:
        _rank0_group = dist.new_group(backend="gloo", timeout=RANK0_WORK_TIMEOUT)
    dist.barrier(group=_rank0_group)


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank (picklable; the others' ``obj`` is ignored)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values) -> list[float]:
    """Element-wise sums of ``values`` over the ranks, in float64 (the values themselves in one process)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if active():
        dist.all_reduce(t)
    return t.tolist()


def launch_local_ranks(procs: int, fn, *args):
    """``fn(*args)`` on ``procs`` ranks of this machine, each a fresh process, as ``torchrun
    --standalone --nproc-per-node procs`` starts them (torch's elastic launcher, no restarts);
    rank 0's return value. Each rank gets ``cores // procs`` threads unless ``OMP_NUM_THREADS`` is
    set. A failed rank stops the others and raises ``RuntimeError`` with that rank's error.

    ``fn`` and ``args`` must be picklable (the ranks are spawned, not forked).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=procs, run_id=f"weakalign-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=1.0,
                          start_method="spawn")
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // procs))
    launcher_log = logging.getLogger("torch.distributed.elastic")
    level = launcher_log.level
    launcher_log.setLevel(logging.CRITICAL)   # a rank's traceback is in its stage's log; one line here
    try:
        return elastic_launch(config, _on_rank)(threads, fn, *args)[0]
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        message = failure.message.get("message") if isinstance(failure.message, dict) else failure.message
        raise RuntimeError(f"rank {rank} failed: {message}") from None
    finally:
        launcher_log.setLevel(level)


def _on_rank(threads: str, fn, *args):
    os.environ["OMP_NUM_THREADS"] = threads
    torch.set_num_threads(int(threads))
    return fn(*args)
