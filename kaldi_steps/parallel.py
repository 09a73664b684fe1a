"""Run :class:`~weakalign.kaldi_steps.gmm.Shard` jobs in worker processes (Kaldi's ``JOB=1:nj``).

kaldi_hmm_gmm's C++ calls hold the GIL, so jobs are processes. Each worker builds its
shard once (features, graphs stay in the worker) and then answers method calls; models
travel by pickle. Results come back in job order, so sums over jobs are deterministic.
With ``nj=1`` the shard lives in this process (no pickling, easy to debug).

>>> split_by_speaker({"a": ("s1", 3.0), "b": ("s2", 1.0), "c": ("s1", 1.0)}, 2)
[['a', 'c'], ['b']]
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import traceback
from typing import Any

log = logging.getLogger("weakalign")


def split_by_speaker(utts: dict[str, tuple[str, float]], nj: int) -> list[list[str]]:
    """Utterance ids (``utt -> (speaker, duration)``) in ``nj`` jobs, whole speakers per job.

    Speakers are dealt, longest first, to the job with the least audio so far; ids keep
    their sorted order inside a job.
    """
    by_spk: dict[str, list[str]] = {}
    dur: dict[str, float] = {}
    for utt in sorted(utts):
        spk, d = utts[utt]
        by_spk.setdefault(spk, []).append(utt)
        dur[spk] = dur.get(spk, 0.0) + d
    nj = max(1, min(nj, len(by_spk)))
    jobs: list[list[str]] = [[] for _ in range(nj)]
    load = [0.0] * nj
    for spk in sorted(by_spk, key=lambda s: (-dur[s], s)):
        j = min(range(nj), key=lambda k: (load[k], k))
        jobs[j].extend(by_spk[spk])
        load[j] += dur[spk]
    return [sorted(j) for j in jobs]


def _worker(conn, shard_args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst

    from .gmm import Shard

    try:
        shard = Shard(*shard_args)
        conn.send(("ok", None))
    except Exception:
        conn.send(("err", traceback.format_exc()))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            break
        method, args, kwargs = msg
        try:
            conn.send(("ok", getattr(shard, method)(*args, **kwargs)))
        except Exception:
            conn.send(("err", traceback.format_exc()))


class JobPool:
    """``nj`` shards; ``pool.call("align", tm, am, ...)`` runs the method on every shard.

    Use as a context manager so worker processes are always stopped.
    """

    def __init__(self, shard_args: list[tuple], nj: int | None = None):
        self.nj = len(shard_args)
        self.local = None
        self.conns = []
        self.procs = []
        if self.nj == 1:
            from .gmm import Shard

            self.local = [Shard(*shard_args[0])]
            return
        ctx = mp.get_context("fork")
        for args in shard_args:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, args), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for i, conn in enumerate(self.conns):
            status, payload = conn.recv()
            if status != "ok":
                self.close()
                raise RuntimeError(f"job {i + 1}: could not load its shard:\n{payload}")

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        if self.local is not None:
            return [getattr(self.local[0], method)(*args, **kwargs)]
        for conn in self.conns:
            conn.send((method, args, kwargs))
        results, errors = [], []
        for i, conn in enumerate(self.conns):
            status, payload = conn.recv()
            if status != "ok":
                errors.append(f"job {i + 1}: {method} failed:\n{payload}")
            results.append(payload)
        if errors:
            raise RuntimeError("\n".join(errors))
        return results

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
