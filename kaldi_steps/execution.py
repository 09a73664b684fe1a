"""Where the sharded jobs run (Kaldi's ``JOB=1:nj``): one execution layer on dask.distributed.

A GMM stage opens an :class:`Executor` for its whole run and asks it for the jobs of each split
(``executor.shards(shard_args(ws, split, nj))``); ``jobs.call("align", tm, am, ...)`` runs
a :class:`~weakalign.kaldi_steps.shard.Shard` method on every job and returns the results in job
order. Work without state kept between calls runs as plain tasks: ``executor.map(fn, jobs,
what)`` returns ``fn(*args)`` of every job in job order (E2E scoring: each job decodes its share
of a split's batches, :mod:`weakalign.e2e.score`), ``executor.outcomes(fn, jobs, what, at_once)``
yields each job's result or error as it finishes, at most ``at_once`` running (the sweep runner's
points, :mod:`weakalign.e2e.sweep`). The other sharded work uses the executor's Dask ``client``
directly: the features stage gives it to Lhotse's ``compute_and_store_features(executor=...)``,
the hybrid realignment submits its blocks of utterances to it (:mod:`.hybrid.realign`). Where the
jobs run:

* no ``cluster`` and ``nj`` > 1: a ``LocalCluster`` of ``nj`` forked worker *processes* with 1
  thread each (kaldi_hmm_gmm's C++ calls hold the GIL, so threads would take turns), started
  when the stage starts and stopped when it ends;
* ``cluster="tcp://HOST:8786"``: the workers of a running scheduler (``dask scheduler`` and
  ``dask worker --nthreads 1`` in an environment where weakalign is installed);
* ``cluster="slurm"`` (or ``pbs``, ``sge``; ``slurm:PATH`` for another config than
  ``conf/cluster.yaml``): workers in batch jobs that dask-jobqueue submits to the queue
  (:mod:`.jobqueue`), stopped when the stage ends;
* no ``cluster`` and ``nj=1``: in this process, without Dask (nothing pickled, easy to debug).

On a cluster the stage did not start itself (an address or a queue), the workers read the data
and exp roots by the paths this process gives them: before any job starts, every worker reads a
probe file this process wrote under each root and writes one back
(:func:`check_shared_filesystem`); a worker that cannot stops the stage with
:class:`NotSharedFilesystem` naming it and the path.

Shard state: one Dask *actor* per job, pinned to one worker (jobs are dealt to the workers in
address order), holds the job's ``Shard`` as a worker of the old hand-made pool did: features and
training graphs are loaded once and stay in the worker; only a call's arguments (the model)
travel and only results come back. A call's arguments are pickled once for all its jobs, and
unpickled once per worker (:class:`PackedArgs`), as :class:`InProcessJobs` hands every shard the
same objects: a Shard method must not change its arguments. Results are gathered in job order,
so sums over jobs do not depend on which worker answers first: for a given ``nj`` the models and alignments are the same bytes whatever runs
them. That is why ``cluster`` is a runtime option (:data:`weakalign.pipeline.options.RUNTIME_OPTIONS`):
it is never compared with a finished run, so changing it does not redo a stage.

Faults: a job's state lives in its worker process only. If that worker dies (killed, out of
memory, its machine gone), the call fails with :class:`JobFailed` naming the job, its worker and
the method; the stage then writes no done-marker, so running it again redoes it from the start,
with the stages before it kept. A plain task (``map``, ``outcomes``) has no state to lose: Dask
runs it again on another worker (up to ``distributed.scheduler.allowed-failures``, 3, lost workers;
then ``KilledWorker``), and a task that raises is named with its job in the :class:`JobFailed`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import pickle
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("weakalign")


class JobFailed(RuntimeError):
    """A job's method raised, or the worker holding the job was lost."""


class NotSharedFilesystem(RuntimeError):
    """A Dask worker does not see the files this process wrote under the data or exp root."""


class WorkerLost(RuntimeError):
    """The worker holding a job's actor is gone (said inside a :class:`JobFailed`)."""


class ShardActor:
    """A :class:`~weakalign.kaldi_steps.shard.Shard` living in a Dask worker (the actor's state)."""

    def __init__(self, *shard_args):
        import kaldi_hmm_gmm  # noqa: F401  -- before anything imports kaldifst

        from .shard import Shard

        self.shard = Shard(*shard_args)

    def run(self, method: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.shard, method)(*args, **kwargs)

    def run_packed(self, method: str, packed: "PackedArgs") -> Any:
        args, kwargs = packed.unpack()
        return self.run(method, args, kwargs)


class PackedArgs:
    """One call's ``(args, kwargs)`` as one pickle, shared by every job of the call.

    Handing a GMM (~700 kB pickled) to each actor as a Python object went through Dask's own
    serialisation once per job: a 2-job ``align`` call on one worker spent 59 ms outside its jobs'
    work, against 25 ms this way (idle; ``weakalign bench gmm_align_dask``,
    ``results/an4/bench_session10/``). As bytes it travels in a few ms; the first job of the call
    on a worker unpickles it and the worker's other jobs of that call reuse the objects (the
    worker keeps the last call's only).

    >>> packed = PackedArgs((1, [2]), {"beam": 10.0})
    >>> packed.unpack() == ((1, [2]), {"beam": 10.0}) and packed.unpack()[0] is packed.unpack()[0]
    True
    """

    _lock = threading.Lock()
    _last: tuple[str, tuple] | None = None  # per worker process: (call token, (args, kwargs))

    def __init__(self, args: tuple, kwargs: dict):
        self.token = uuid.uuid4().hex
        self.data = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)

    def unpack(self) -> tuple[tuple, dict]:
        with PackedArgs._lock:
            last = PackedArgs._last
            if last is None or last[0] != self.token:
                last = PackedArgs._last = (self.token, pickle.loads(self.data))
            return last[1]


class InProcessJobs:
    """The jobs as plain ``Shard`` objects in this process (``nj=1`` without a cluster)."""

    def __init__(self, shard_args: list[tuple]):
        from .shard import Shard

        self.shards = [Shard(*args) for args in shard_args]

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        return [getattr(shard, method)(*args, **kwargs) for shard in self.shards]

    def close(self) -> None:
        self.shards = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ActorJobs:
    """One :class:`ShardActor` per job, each pinned to a worker of ``client``'s cluster."""

    def __init__(self, client, shard_args: list[tuple]):
        self.client = client
        workers = cluster_workers(client)
        if not workers:
            raise JobFailed(f"the Dask cluster at {client.scheduler.address} has no workers")
        self.workers = [workers[j % len(workers)] for j in range(len(shard_args))]
        self.futures = [client.submit(ShardActor, *args, actor=True, workers=[worker],
                                      allow_other_workers=False, key=f"shard-job{j + 1}-{_token()}")
                        for j, (args, worker) in enumerate(zip(shard_args, self.workers))]
        self.actors: list = []
        try:
            # The actor handles bind to the current client when they arrive: this one, not a global default.
            with client.as_current():
                self.actors = self._gather("load its shard", self.futures)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        # Every job starts before any result is awaited, as the old pool sent to every worker first.
        packed = PackedArgs(args, kwargs)
        pending = [actor.run_packed(method, packed) if self._alive(j) else None
                   for j, actor in enumerate(self.actors)]
        return self._gather(method, pending)

    def _alive(self, job: int) -> bool:
        """Whether the worker holding the job's actor is still there (Dask marks its key lost then)."""
        return self.futures[job].status == "finished"

    def _gather(self, what: str, pending: list) -> list[Any]:
        """The results in job order; every failed job is named (all of them, not just the first)."""
        from tqdm import tqdm

        results, errors = [], []
        # A live bar of the jobs done (on a terminal only: tqdm's disable=None), gone when all are.
        for j, future in enumerate(tqdm(pending, desc=f"{what} (jobs)", unit="job", leave=False, disable=None)):
            try:
                results.append(self._wait(j, future))
            except Exception as e:
                errors.append(f"job {j + 1} (worker {self.workers[j]}): {what} failed: {self._describe(j, e)}")
                results.append(None)
        if errors:
            raise JobFailed("\n".join(errors))
        return results

    def _wait(self, job: int, future) -> Any:
        """The job's result; checks every second that its worker lives, so a lost worker is an
        error, never a wait for a key Dask may want to recompute on a worker that is gone."""
        if future is None:
            raise WorkerLost(f"not started: its actor's key is {self.futures[job].status}")
        while True:
            try:
                return future.result(timeout=1)
            except (TimeoutError, UnboundLocalError):
                # UnboundLocalError: distributed's sync() (2026.8) when its 1 s wait ends as the
                # awaited call is cancelled -- a timeout that lost a race, seen on a loaded machine.
                if self.actors and not self._alive(job):
                    raise WorkerLost(f"its actor's key is {self.futures[job].status}") from None

    def _describe(self, job: int, error: Exception) -> str:
        """A job's error on one line; a lost worker said in words."""
        text = f"{type(error).__name__}: {error}"
        # OSError: Dask's "Unable to contact Actor's worker", before the scheduler has noticed the loss.
        if isinstance(error, (WorkerLost, OSError)) or (self.actors and not self._alive(job)):
            return (f"its worker was lost ({text}); the job's state went with it: run the stage again "
                    "to redo it")
        return text

    def close(self) -> None:
        # Releasing the futures makes the workers drop the actors (and the shards they hold).
        if self.futures:
            self.client.cancel(self.futures)
        self.futures, self.actors = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _token() -> str:
    return uuid.uuid4().hex[:8]


class Executor:
    """Where a stage's jobs run, for the stage's duration (see the module docstring).

    ``with Executor(nj, cluster, shared=(ws.data, ws.exp)) as executor:
    with executor.shards(args) as jobs: jobs.call(...)``. ``shared``: the folders the workers read
    and write, checked to be the same files for them as for this process on a cluster the stage
    did not start itself.
    """

    def __init__(self, nj: int, cluster: str | None = None, shared: tuple = ()):
        self.nj = nj
        self.address = cluster or None
        self.shared = tuple(shared)
        self.client = None
        self.own_cluster = None  # a LocalCluster or a dask-jobqueue cluster this executor started

    def __enter__(self):
        from .jobqueue import parse_cluster_spec, start_jobqueue_cluster

        queue = parse_cluster_spec(self.address)
        try:
            if queue is not None:
                self.own_cluster, self.client = start_jobqueue_cluster(queue, self.nj)
            elif self.address:
                self.client = _connect(self.address)
            elif self.nj > 1:
                _import_shard_modules()
                self._start_own_local_cluster()
            if self.client is not None:
                log_where_jobs_run(self.client, embedded=self.address is None)
                if self.address is not None:
                    check_shared_filesystem(self.client, self.shared)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_own_local_cluster(self) -> None:
        """A local cluster of forked workers; spawned ones if the forked never all register.

        On a loaded machine the workers can register after ``LocalCluster`` returns: wait for them
        rather than find an empty cluster ("has no workers") at the first ``shards()``. A forked
        worker can also hang for good, or die at birth ("Nanny failed to start worker process"): a fork
        copies the parent's locks but not the threads holding them (Dask's event loop, torch's pools),
        which Dask's docs warn of. Seen in about one test-suite run in five; then the cluster starts
        again with spawned workers (slower to start, no such risk).
        """
        try:
            self._start_and_wait("fork")
        except Exception as e:   # a forked worker died at birth, hung, or never registered
            log.warning("a forked Dask worker failed to start (%s: %s): starting spawned ones", type(e).__name__, e)
            self.__exit__()
            self._start_and_wait("spawn")

    def _start_and_wait(self, method: str) -> None:
        self.own_cluster = _start_local_cluster(self.nj, method)
        self.client = _connect(self.own_cluster)
        timeout = WORKER_START_TIMEOUT_S[method]
        try:
            self.client.wait_for_workers(self.nj, timeout=timeout)
        except TimeoutError as e:
            raise RuntimeError(f"the local Dask cluster's {self.nj} {method}ed workers did not all register "
                               f"in {timeout} s ({e})") from e

    def shards(self, shard_args: list[tuple]):
        """The jobs of one split, as ``call``-able shards: a context manager that releases them."""
        if self.client is None:
            return InProcessJobs(shard_args)
        return ActorJobs(self.client, shard_args)

    def map(self, fn: Callable, jobs: list[tuple], what: str) -> list[Any]:
        """``fn(*args)`` for every job's ``args``, the results in job order. Without a client, in
        this process one job after the other (errors raised as they are); else each job is a Dask
        task, and every job that failed is named in one :class:`JobFailed`."""
        if self.client is None:
            return [fn(*args) for args in jobs]
        from tqdm import tqdm

        results: list[Any] = [None] * len(jobs)
        errors = {}
        # A live bar of the jobs done (on a terminal only), as ActorJobs.call draws.
        for j, result, error in tqdm(self.outcomes(fn, jobs, what), total=len(jobs), desc=f"{what} (jobs)",
                                     unit="job", leave=False, disable=None):
            results[j] = result
            if error is not None:
                errors[j] = f"job {j + 1}: {what} failed: {type(error).__name__}: {error}"
        if errors:
            raise JobFailed("\n".join(errors[j] for j in sorted(errors)))
        return results

    def outcomes(self, fn: Callable, jobs: list[tuple], what: str,
                 at_once: int | None = None) -> Iterator[tuple[int, Any, Exception | None]]:
        """``(job index, fn(*args) or None, None or its error)`` of every job as it finishes, with at
        most ``at_once`` jobs submitted at a time (default: all). A job's error does not stop the
        others. Without a client, in this process in job order."""
        if self.client is None:
            for j, args in enumerate(jobs):
                try:
                    yield j, fn(*args), None
                except Exception as e:
                    yield j, None, e
            return
        from distributed import as_completed

        token, index = _token(), {}
        name = "".join(c if c.isalnum() else "_" for c in what)

        def submit(j: int):
            future = self.client.submit(fn, *jobs[j], key=f"{name}-job{j + 1}-{token}", pure=False)
            index[future.key] = j
            return future

        queued = iter(range(len(jobs)))
        running = as_completed([submit(j) for j in itertools.islice(queued, at_once or len(jobs))],
                               loop=self.client.loop)
        try:
            for future in running:
                try:
                    yield index[future.key], future.result(), None
                except Exception as e:
                    yield index[future.key], None, e
                finally:
                    future.release()
                j = next(queued, None)
                if j is not None:
                    running.add(submit(j))
        finally:
            # A caller that stops early (or an interrupt) leaves no task running on the cluster.
            self.client.cancel(list(running.futures))

    def __exit__(self, *exc):
        # Tearing down a cluster whose workers were lost can itself fail (distributed's nanny asserts
        # on a worker still "starting"). That must neither hide the stage's own error, the one that
        # says which job failed and why, nor leave the cluster running because the client's close
        # failed first; with no error the jobs' outputs are complete.
        for closable in (self.client, self.own_cluster):
            if closable is None:
                continue
            try:
                closable.close()
            except Exception as e:
                log.warning("closing the Dask cluster failed (%s: %s)%s", type(e).__name__, e,
                            f" while this error propagated: {exc[1]}" if exc[1] is not None else "")
        self.client = self.own_cluster = None


def check_shared_filesystem(client, folders) -> None:
    """Every worker of ``client`` reads a probe file written here under each folder and writes an
    answer next to it that this process reads back; else :class:`NotSharedFilesystem` naming each
    worker and path it failed on. The folders are given as this process names them (a relative
    path is resolved in each worker's own working directory, as the jobs' paths would be)."""
    token = _token()
    probes = []
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / f".weakalign-probe-{token}"
        probe.write_text(token)
        probes.append(probe)
    try:
        answers = client.run(_answer_probes, [str(p) for p in probes], token)
        problems = [f"worker {worker}: {problem}" for worker, worker_problems in sorted(answers.items())
                    for problem in worker_problems]
        problems += [f"worker {worker}: the answer it wrote, {answer}, is not here"
                     for worker in sorted(answers) if not answers[worker]
                     for answer in _answer_paths(probes, worker)
                     if not (answer.exists() and answer.read_text() == worker)]
    finally:
        for probe in probes:
            for path in probe.parent.glob(probe.name + "*"):
                path.unlink(missing_ok=True)
    if problems:
        raise NotSharedFilesystem(
            "the Dask workers do not see this machine's files: the data and exp roots must be on a filesystem "
            "shared by this machine and every worker, named by the same (absolute) paths on both:\n  "
            + "\n  ".join(problems))


def _answer_paths(probes: list[Path], worker: str) -> list[Path]:
    safe = "".join(c if c.isalnum() else "_" for c in worker)
    return [probe.with_name(f"{probe.name}.{safe}") for probe in probes]


def _answer_probes(probes: list[str], token: str, dask_worker=None) -> list[str]:
    """In a worker: read each probe and write the answer file; the problems, in words."""
    worker = dask_worker.address
    problems = []
    for probe, answer in zip(probes, _answer_paths([Path(p) for p in probes], worker)):
        where = f"{probe} (from {os.getcwd()} on {socket.gethostname()})"
        try:
            if Path(probe).read_text() != token:
                problems.append(f"{where} holds another run's probe")
                continue
            answer.write_text(worker)
        except OSError as e:
            problems.append(f"cannot read or write {where}: {e.strerror or e}")
    return problems


def _import_shard_modules() -> None:
    """Import what a Shard needs (lhotse, torch, the feature readers) before the workers fork, so
    that they inherit it instead of each importing it again."""
    import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst
    import lhotse  # noqa: F401

    from weakalign.pipeline import acoustic_features  # noqa: F401

    from . import lang, shard  # noqa: F401


#: How long a local cluster's workers may take to register, per start method: a forked worker
#: starts in about a second (minutes on a loaded machine); a spawned one imports torch again.
WORKER_START_TIMEOUT_S = {"fork": 120, "spawn": 300}


def _start_local_cluster(nj: int, method: str = "fork"):
    import dask
    from distributed import LocalCluster

    # Forked, not spawned (Dask's default): a worker inherits the modules this process has
    # imported (torch, lhotse, kaldi_hmm_gmm) and starts in about a second instead of importing
    # them again (10-25 s on a loaded 2-core machine), and a script that runs a stage needs no
    # ``if __name__ == "__main__"`` guard -- as with the forked pool this layer replaced.
    # ":0": free ports, so that two stages (or two checkouts) on one machine never collide.
    # memory_limit=0: no share of the machine's memory per worker that Dask would pause or kill
    # a worker past (the old pool had none; a large corpus's shard should not end the stage).
    if method == "fork":
        _close_shared_readers()
    with dask.config.set({"distributed.worker.multiprocessing-method": method}), _nanny_env_kept(), \
            _no_garbage_inherited(method == "fork"):
        # death_timeout: a nanny whose forked worker never reports gives up (raises) instead of
        # waiting for ever in LocalCluster(); the caller then starts spawned workers.
        return LocalCluster(n_workers=nj, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=":0", memory_limit=0, silence_logs=logging.WARNING,
                            **({"death_timeout": WORKER_START_TIMEOUT_S["fork"]} if method == "fork" else {}))


@contextlib.contextmanager
def _no_garbage_inherited(forking: bool):
    """Collect this process's garbage and freeze what is left while the block forks workers (the
    ``gc.freeze`` recipe of Python's ``gc`` docs). A forked worker otherwise inherits the parent's
    uncollected cycles and frees them in its own first collection, running destructors of C++
    objects (torch, kaldi) in a process that did not make them: the likely cause of the workers
    that aborted there ("Fatal Python error: Aborted ... Garbage-collecting" in a job's first
    unpickle, about once in ten test runs). The workers' collections never scan frozen objects;
    this process unfreezes them afterwards."""
    if not forking:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _close_shared_readers() -> None:
    """Close the feature readers Lhotse keeps open in this process before forking workers: a forked
    worker would inherit them, and a Kaldi ``feats.scp`` reader's file offset is then shared by this
    process and every worker, whose concurrent seeks and reads would interleave (wrong frames, at
    random). Each process opens its own on its first read."""
    from lhotse.features.io import close_cached_file_handles

    close_cached_file_handles()


#: What Dask's nanny sets to 1 in this very process before forking its workers
#: (``distributed.nanny.pre-spawn-environ``): left there, every later torch step of the stage
#: (e.g. the hybrid's training) would run on one thread.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def nanny_env_vars() -> tuple[str, ...]:
    """Every variable Dask's nanny sets in this process before forking its workers: the thread counts
    and whatever else ``distributed.nanny.pre-spawn-environ`` holds, e.g. ``MALLOC_TRIM_THRESHOLD_=65536``,
    which makes glibc hand freed memory back at once: inherited by the hybrid's DDP ranks it cost them
    ~160k page faults/s and a third of their time in the kernel (an AN4 epoch 156 s instead of 110 s;
    RESULTS.md, session 27)."""
    import dask
    import distributed  # noqa: F401  (its import adds its defaults to dask.config)

    spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ", default=None) or {}
    return tuple(dict.fromkeys((*THREAD_ENV_VARS, *spawn_env)))


@contextlib.contextmanager
def _nanny_env_kept():
    """Restore :func:`nanny_env_vars` in ``os.environ`` after the block (workers keep theirs)."""
    before = {k: os.environ.get(k) for k in nanny_env_vars()}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _connect(address_or_cluster):
    from distributed import Client

    return Client(address_or_cluster, set_as_default=False)


def cluster_workers(client) -> list[str]:
    """The addresses of the workers the scheduler has now, asked of it directly. Not
    ``client.scheduler_info()["workers"]``: that returns a cache which the client's periodic update
    (every ``distributed.client.scheduler-info-interval``) refills *without* workers, and when the update
    lands between the fetch and the read the cluster looks empty ("has no workers"; seen on a loaded
    machine, and 19 times in 200 at a 1 ms interval)."""
    return sorted(client.nthreads())


def log_where_jobs_run(client, *, embedded: bool) -> None:
    """One line: which cluster, how many workers, and where its dashboard is."""
    workers = cluster_workers(client)
    what = "a local Dask cluster" if embedded else f"the Dask cluster at {client.scheduler.address}"
    log.info("jobs run on %s of %d worker(s); dashboard: %s", what, len(workers), dashboard(client))


def dashboard(client) -> str:
    """The dashboard's address; without bokeh it only says to install it (``pip install '.[cluster]'``)."""
    import importlib.util

    link = client.dashboard_link
    return link if importlib.util.find_spec("bokeh") else f"{link} (its plots need bokeh: pip install '.[cluster]')"
