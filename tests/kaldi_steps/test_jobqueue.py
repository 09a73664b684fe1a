"""``--cluster slurm|pbs|sge`` (weakalign.kaldi_steps.jobqueue): the config, the class, the job script.

No queue is needed: a dask-jobqueue cluster writes its job script without submitting anything,
so the tests read what ``sbatch``/``qsub`` would get from ``conf/cluster.yaml``.
"""

from pathlib import Path

import pytest
import yaml

from weakalign.kaldi_steps.jobqueue import (ClusterConfig, ClusterConfigError, make_jobqueue_cluster,
                                            parse_cluster_spec, read_cluster_config)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "cluster.yaml"
MINIMAL = {"cores": 4, "memory": "8GB", "walltime": "02:00:00"}


def test_the_documented_config_parses_with_one_single_thread_worker_per_core():
    config = read_cluster_config(REPO_CONFIG)
    assert config.workers_per_job == config.cores
    assert config.workers == config.jobs * config.cores


@pytest.mark.parametrize("value, spec", [
    ("slurm", ("slurm", "conf/cluster.yaml")),
    ("PBS", ("pbs", "conf/cluster.yaml")),
    ("sge:/shared/my.yaml", ("sge", "/shared/my.yaml")),
    ("tcp://10.1.2.3:8786", None),
    ("10.1.2.3:8786", None),
    (None, None),
])
def test_cluster_values_name_a_batch_system_or_an_address(value, spec):
    parsed = parse_cluster_spec(value)
    assert (parsed and (parsed.kind, str(parsed.config_path))) == spec


@pytest.mark.parametrize("change, message", [
    ({"cpus": 4}, r"unknown key\(s\) cpus; known: account, cores"),
    ({"cores": None}, r"missing cores"),
    ({"cores": "four"}, r"cores must be a positive integer, got 'four'"),
    ({"jobs": 0}, r"jobs must be a positive integer, got 0"),
    ({"processes": 8}, r"processes \(8\) is more than cores \(4\)"),
    ({"processes": 3}, r"cores \(4\) is not a multiple of processes \(3\)"),
    ({"memory": "lots"}, r"memory 'lots' is not a size"),
    ({"walltime": "2 hours"}, r"walltime '2 hours' is not \[\[HH:\]MM:\]SS"),
    ({"job_script_prologue": "module load gcc"}, r"job_script_prologue must be a list of lines"),
    ({"start_timeout": -1}, r"start_timeout must be a positive number"),
])
def test_a_bad_config_names_the_file_and_the_key(tmp_path, change, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **change}))
    with pytest.raises(ClusterConfigError, match=rf"^{path}: {message}"):
        read_cluster_config(path)


def test_a_missing_or_non_mapping_config_says_so(tmp_path):
    with pytest.raises(ClusterConfigError, match=r"no cluster config at .*nowhere\.yaml: copy conf/cluster\.yaml"):
        read_cluster_config(tmp_path / "nowhere.yaml")
    (tmp_path / "list.yaml").write_text("- cores\n")
    with pytest.raises(ClusterConfigError, match=r"expected a mapping of keys to values, got list"):
        read_cluster_config(tmp_path / "list.yaml")


@pytest.mark.parametrize("kind, cls, directives", [
    ("slurm", "SLURMCluster", ["#SBATCH -p long", "#SBATCH -A speech", "#SBATCH --cpus-per-task=4",
                               "#SBATCH --mem=8G", "#SBATCH -t 02:00:00", "#SBATCH --constraint=avx2"]),
    ("pbs", "PBSCluster", ["#PBS -q long", "#PBS -A speech", "#PBS -l select=1:ncpus=4:mem=7630MB",
                           "#PBS -l walltime=02:00:00", "#PBS --constraint=avx2"]),
    ("sge", "SGECluster", ["#$ -q long", "#$ -P speech", "#$ -l h_rt=02:00:00", "#$ --constraint=avx2"]),
])
def test_the_job_script_asks_the_queue_for_the_config_and_runs_single_thread_workers(kind, cls, directives):
    """The class of each batch system, and the script it would submit: the config's resources as
    the system's directives, the prologue, then ``processes`` workers of 1 thread each, started
    by this Python (the same virtualenv on the shared filesystem)."""
    import sys

    config = ClusterConfig.from_dict({**MINIMAL, "processes": 4, "jobs": 3, "queue": "long", "account": "speech",
                                      "job_script_prologue": ["module load gcc"],
                                      "job_extra_directives": ["--constraint=avx2"]})
    cluster = make_jobqueue_cluster(parse_cluster_spec(kind), config)
    try:
        assert type(cluster).__name__ == cls
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in directives:
        assert directive in lines, (directive, script)
    worker = next(line for line in lines if "dask_worker" in line)
    assert lines.index("module load gcc") < lines.index(worker)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://")
    assert "--nthreads 1" in worker and "--nworkers 4" in worker


def test_a_stage_asked_for_slurm_without_its_config_stops_before_any_job(tmp_path):
    """``Executor(nj, "slurm:PATH")`` reads the config first: a missing one is the error, and no
    scheduler is left behind."""
    from weakalign.kaldi_steps.execution import Executor

    executor = Executor(2, f"slurm:{tmp_path / 'cluster.yaml'}")
    with pytest.raises(ClusterConfigError, match=r"no cluster config at .*cluster\.yaml"):
        executor.__enter__()
    assert executor.client is None and executor.own_cluster is None


def test_align_passes_cluster_to_features_too():
    from weakalign.pipeline.align_options import runtime_args
    from weakalign.pipeline.cli import cli

    assert runtime_args(cli.commands["features"], 2, "slurm") == ["--nj", "2", "--cluster", "slurm"]


#: Stand-ins for Slurm's commands on this machine, as a one-node queue would act: ``sbatch`` keeps a
#: copy of the job script (dask-jobqueue deletes its temporary file once submitted), starts it
#: detached in its own process group and prints Slurm's answer; ``scancel`` logs its call and ends
#: that group.
FAKE_SBATCH = """#!/usr/bin/env bash
set -e
id=$((100 + $(ls "$FAKE_SLURM_DIR" | grep -c '\\.sh$' || true)))
cp "$1" "$FAKE_SLURM_DIR/job$id.sh"
setsid bash "$FAKE_SLURM_DIR/job$id.sh" > "$FAKE_SLURM_DIR/job$id.out" 2>&1 < /dev/null &
echo $! > "$FAKE_SLURM_DIR/job$id.pid"
echo "Submitted batch job $id"
"""
FAKE_SCANCEL = """#!/usr/bin/env bash
echo "$@" >> "$FAKE_SLURM_DIR/scancel.log"
for id in "$@"; do kill -TERM -- "-$(cat "$FAKE_SLURM_DIR/job$id.pid")" 2>/dev/null || true; done
"""


def test_mono_through_slurm_submission_runs_in_the_batch_jobs_and_gives_the_local_clusters_bytes(
        an4_slice_tri1, tmp_path, monkeypatch):
    """``--cluster slurm:PATH`` end to end, the queue excepted: dask-jobqueue writes the job script
    from the config and calls ``sbatch``, the job's 2 workers join the stage's scheduler, mono's 2
    jobs run there and write the bytes the embedded local cluster wrote; the stage's end cancels
    the batch job (``scancel``), whose workers are then gone."""
    import os
    import time

    from tests.kaldi_steps.test_execution import _assert_same_mono, _mono_workspace
    from tests.fixtures_gmm import MONO_SLICE
    from weakalign.kaldi_steps.train_mono import mono_stage
    from weakalign.pipeline.stage import run_stage

    bin_dir, jobs_dir = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir(), jobs_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(jobs_dir))
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"cores": 2, "processes": 2, "memory": "4GB", "walltime": "00:30:00",
                                      "jobs": 1, "start_timeout": 240}))

    ws = _mono_workspace(an4_slice_tri1, tmp_path / "ws")
    run_stage("mono", ws, mono_stage, nj=2, cluster=f"slurm:{config}", **MONO_SLICE)

    _assert_same_mono(ws, an4_slice_tri1)
    script = (jobs_dir / "job100.sh").read_text()
    assert "#SBATCH --cpus-per-task=2" in script and "--nworkers 2" in script and "--nthreads 1" in script
    assert "on the Dask cluster at tcp://" in (ws.log_dir / "mono.log").read_text()
    assert (jobs_dir / "scancel.log").read_text().split() == ["100"]
    job = int((jobs_dir / "job100.pid").read_text())
    deadline = time.time() + 60
    while _group_alive(job) and time.time() < deadline:
        time.sleep(0.5)
    assert not _group_alive(job), "the batch job's workers outlived the stage"


def _group_alive(pgid: int) -> bool:
    import os

    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
