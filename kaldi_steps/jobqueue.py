"""``--cluster slurm|pbs|sge``: Dask workers in batch jobs of a queue (dask-jobqueue), from ``conf/cluster.yaml``.

The config is small and the same for the three schedulers (see ``conf/cluster.yaml`` for what each
key means); ``--cluster slurm`` reads ``conf/cluster.yaml`` of the current directory, and
``--cluster slurm:path/to/my.yaml`` another file. Each batch job runs ``processes`` Dask workers
of ``cores / processes`` threads; a GMM job runs on one thread (kaldi_hmm_gmm's C++ calls hold
the GIL), so ``processes = cores`` (the default) uses every core, and a stage with ``--nj N``
wants ``jobs * processes >= N`` workers.

>>> spec = parse_cluster_spec("slurm:conf/cluster.yaml")
>>> (spec.kind, str(spec.config_path))
('slurm', 'conf/cluster.yaml')
>>> parse_cluster_spec("tcp://10.0.0.1:8786") is None
True
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

#: ``--cluster`` values that start a dask-jobqueue cluster, and the class each one uses.
JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
DEFAULT_CONFIG = Path("conf/cluster.yaml")
_WALLTIME = re.compile(r"^\d+(:\d{2}){0,2}$")


class ClusterConfigError(ValueError):
    """``conf/cluster.yaml`` is missing, or a key is unknown or has a bad value (named in the message)."""


@dataclass(frozen=True)
class JobqueueSpec:
    kind: str  # slurm | pbs | sge
    config_path: Path


def parse_cluster_spec(cluster: str | None) -> JobqueueSpec | None:
    """The batch system and config file a ``--cluster`` value asks for; None for an address or nothing."""
    if not cluster:
        return None
    kind, _, path = cluster.partition(":")
    if kind.lower() not in JOBQUEUE_CLASSES or path.startswith("//"):
        return None
    return JobqueueSpec(kind.lower(), Path(path) if path else DEFAULT_CONFIG)


@dataclass(frozen=True)
class ClusterConfig:
    """What ``conf/cluster.yaml`` holds (the file documents every key)."""

    cores: int
    memory: str
    walltime: str
    jobs: int = 1
    processes: int | None = None  # default: ``cores`` (one single-thread worker per core)
    queue: str | None = None
    account: str | None = None
    interface: str | None = None
    log_directory: str | None = None
    job_script_prologue: list[str] = field(default_factory=list)
    job_extra_directives: list[str] = field(default_factory=list)
    start_timeout: float = 600.0

    @property
    def workers_per_job(self) -> int:
        return self.processes or self.cores

    @property
    def workers(self) -> int:
        return self.jobs * self.workers_per_job

    @classmethod
    def from_dict(cls, raw, source: str = "the cluster config") -> "ClusterConfig":
        """A checked config; every problem is named with its key.

        >>> ClusterConfig.from_dict({"cores": 4, "memory": "8GB", "walltime": "01:00:00", "jobs": 2}).workers
        8
        >>> ClusterConfig.from_dict({"cores": 4, "memory": "8GB", "walltime": "1h"})
        Traceback (most recent call last):
        ...
        weakalign.kaldi_steps.jobqueue.ClusterConfigError: the cluster config: walltime '1h' is not [[HH:]MM:]SS
        """
        if not isinstance(raw, dict):
            raise ClusterConfigError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ClusterConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [name for name in ("cores", "memory", "walltime") if raw.get(name) is None]
        if missing:
            raise ClusterConfigError(f"{source}: missing {', '.join(missing)}")
        values = {k: v for k, v in raw.items() if v is not None}
        for name in ("cores", "jobs", "processes"):
            if name in values and (type(values[name]) is not int or values[name] < 1):
                raise ClusterConfigError(f"{source}: {name} must be a positive integer, got {values[name]!r}")
        config = cls(**values)
        _check_values(config, source)
        return config

    def jobqueue_kwargs(self, kind: str) -> dict:
        """The keyword arguments of the dask-jobqueue cluster class of ``kind`` (``SLURMCluster(**kwargs)``)."""
        kwargs = dict(cores=self.cores, processes=self.workers_per_job, memory=self.memory,
                      walltime=self.walltime, queue=self.queue, account=self.account,
                      interface=self.interface, log_directory=self.log_directory,
                      job_script_prologue=list(self.job_script_prologue),
                      job_extra_directives=list(self.job_extra_directives),
                      # The workers run this Python (the same virtualenv, on the shared filesystem).
                      python=sys.executable,
                      # Free ports: two stages or checkouts on one login node never collide.
                      scheduler_options={"dashboard_address": ":0"})
        if kind == "sge":  # SGE calls the account a project (qsub -P)
            kwargs["project"] = kwargs.pop("account")
        return {k: v for k, v in kwargs.items() if v is not None}


def _check_values(config: ClusterConfig, source: str) -> None:
    from dask.utils import parse_bytes

    if config.processes is not None and config.processes > config.cores:
        raise ClusterConfigError(f"{source}: processes ({config.processes}) is more than cores ({config.cores}): "
                                 "each worker needs a core")
    if config.cores % config.workers_per_job:
        raise ClusterConfigError(f"{source}: cores ({config.cores}) is not a multiple of processes "
                                 f"({config.processes}): each worker gets cores/processes threads")
    try:
        parse_bytes(str(config.memory))
    except ValueError:
        raise ClusterConfigError(f"{source}: memory {config.memory!r} is not a size such as 16GB") from None
    if not _WALLTIME.match(str(config.walltime)):
        raise ClusterConfigError(f"{source}: walltime {config.walltime!r} is not [[HH:]MM:]SS")
    for name in ("job_script_prologue", "job_extra_directives"):
        value = getattr(config, name)
        if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
            raise ClusterConfigError(f"{source}: {name} must be a list of lines, got {value!r}")
    if not isinstance(config.start_timeout, (int, float)) or config.start_timeout <= 0:
        raise ClusterConfigError(f"{source}: start_timeout must be a positive number of seconds")


def read_cluster_config(path: Path) -> ClusterConfig:
    import yaml

    if not Path(path).is_file():
        raise ClusterConfigError(f"no cluster config at {path}: copy conf/cluster.yaml of weakalign's "
                                 "checkout there, or name one with --cluster slurm:PATH")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ClusterConfigError(f"{path}: not YAML: {e}") from None
    return ClusterConfig.from_dict(raw or {}, source=str(path))


def jobqueue_class(kind: str):
    """The dask-jobqueue class of a batch system; a clear error if dask-jobqueue is not installed."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterConfigError(f"--cluster {kind} needs dask-jobqueue: pip install 'weakalign[cluster]'") from None
    return getattr(dask_jobqueue, JOBQUEUE_CLASSES[kind])


def make_jobqueue_cluster(spec: JobqueueSpec, config: ClusterConfig | None = None):
    """The (not yet scaled) dask-jobqueue cluster of ``spec``: its scheduler runs in this process;
    ``cluster.job_script()`` shows what it would submit."""
    config = config or read_cluster_config(spec.config_path)
    return jobqueue_class(spec.kind)(**config.jobqueue_kwargs(spec.kind))


def start_jobqueue_cluster(spec: JobqueueSpec, nj: int):
    """A dask-jobqueue cluster with ``config.jobs`` batch jobs submitted, and a client that has
    waited for ``min(nj, workers)`` of their workers (``start_timeout`` seconds at most)."""
    from distributed import Client

    config = read_cluster_config(spec.config_path)
    cluster = make_jobqueue_cluster(spec, config)
    try:
        cluster.scale(jobs=config.jobs)
        client = Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(min(nj, config.workers), timeout=config.start_timeout)
        except TimeoutError:
            client.close()
            raise TimeoutError(f"--cluster {spec.kind}: fewer than {min(nj, config.workers)} Dask workers started "
                               f"within start_timeout={config.start_timeout:g} s (is the queue full? see "
                               f"the batch jobs' logs in {config.log_directory or 'the submit directory'})") from None
    except BaseException:
        cluster.close()
        raise
    return cluster, client
