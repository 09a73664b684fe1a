"""The execution layer of the GMM stages on dask.distributed (weakalign.kaldi_steps.execution).

The session fixture ``an4_slice_tri1`` trains mono with 2 jobs on the embedded local cluster;
here the same stage runs on an external scheduler with 2 workers, started as a user would
(``dask scheduler``, ``dask worker``) on 127.0.0.1 (``external_scheduler``, tests/fixtures_dask.py),
and must give the same bytes.
"""

import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst

import logging
import operator
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_gmm import MONO_SLICE

#: What mono writes that must not depend on where its jobs ran.
MONO_OUTPUTS = ["final.mdl", "tree", "final.occs", "phones.txt", "num_jobs", "ali.1.gz", "ali.2.gz"]


def _mono_workspace(an4_slice_tri1, root):
    from tests.fixtures_align import linked_workspace

    return linked_workspace(an4_slice_tri1, root, ali_dirs=(), data_dirs=("manifests", "mfcc", "lang"))


def _assert_same_mono(ws, reference):
    for name in MONO_OUTPUTS:
        assert (ws.exp / "mono" / name).read_bytes() == (reference.exp / "mono" / name).read_bytes(), name


def test_mono_on_an_external_scheduler_is_the_local_clusters_bytes_and_cluster_redoes_nothing(
        an4_slice_tri1, external_scheduler, tmp_path):
    """mono with 2 jobs on the external scheduler writes the same model and alignment bytes as on
    the embedded local cluster (the session fixture); the request without ``cluster`` then finds
    the stage done: ``cluster`` is not part of its identity, nor recorded."""
    from weakalign.kaldi_steps.train_mono import mono_stage
    from weakalign.pipeline.io import read_json
    from weakalign.pipeline.options import options_path
    from weakalign.pipeline.stage import marker_path, run_stage

    ws = _mono_workspace(an4_slice_tri1, tmp_path)
    run_stage("mono", ws, mono_stage, nj=2, cluster=external_scheduler, **MONO_SLICE)
    _assert_same_mono(ws, an4_slice_tri1)
    assert "on the Dask cluster at " + external_scheduler in (ws.log_dir / "mono.log").read_text()

    marker = marker_path(ws, "mono").read_bytes()
    assert "cluster" not in read_json(marker_path(ws, "mono"))["options"]
    assert "cluster" not in read_json(options_path(ws, "mono"))["options"]
    run_stage("mono", ws, mono_stage, nj=2, **MONO_SLICE)
    assert marker_path(ws, "mono").read_bytes() == marker


def test_a_failing_job_is_named_with_its_worker(an4_slice_tri1, external_scheduler):
    from weakalign.kaldi_steps.execution import Executor, JobFailed
    from weakalign.kaldi_steps.shard import shard_args

    with Executor(2, external_scheduler) as executor, executor.shards(shard_args(an4_slice_tri1, "dev", 2)) as jobs:
        assert [len(refs) for refs in jobs.call("references")] == [6, 6]
        with pytest.raises(JobFailed, match=r"(?s)job 1 \(worker tcp://127\.0\.0\.1:\d+\): no_such_method failed: "
                                            r"AttributeError.*\njob 2 \(worker tcp://"):
            jobs.call("no_such_method")


def test_a_worker_killed_during_mono_names_its_job_and_a_rerun_redoes_the_stage(
        an4_slice_tri1, external_scheduler, tmp_path):
    """SIGKILL of the worker holding job 2 at mono's 3rd iteration: the stage fails with an error
    naming job 2, its worker and the loss, writes no marker; run again (the nanny has restarted
    the worker), it is redone to the bytes of the uninterrupted run."""
    from distributed import Client

    from weakalign.kaldi_steps.execution import JobFailed
    from weakalign.kaldi_steps.train_mono import mono_stage
    from weakalign.pipeline.stage import marker_path, run_stage

    ws = _mono_workspace(an4_slice_tri1, tmp_path)
    with Client(external_scheduler, set_as_default=False) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids)[1]  # jobs are dealt to the workers in address order: job 2's
        log = ws.log_dir / "mono.log"
        killer = threading.Thread(target=_kill_when_logged, args=(log, "mono iter 3", pids[victim]), daemon=True)
        killer.start()
        with pytest.raises(JobFailed, match=rf"job 2 \(worker {victim}\): \w+ failed: its worker was lost"):
            run_stage("mono", ws, mono_stage, nj=2, cluster=external_scheduler, **MONO_SLICE)
        killer.join()
        assert not marker_path(ws, "mono").exists()
        assert "job 1" not in log.read_text().split("JobFailed")[-1].split("\n\n")[0]

        client.wait_for_workers(2, timeout=180)
    run_stage("mono", ws, mono_stage, nj=2, cluster=external_scheduler, **MONO_SLICE)
    _assert_same_mono(ws, an4_slice_tri1)


def _kill_when_logged(log: Path, line: str, pid: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not (log.exists() and line in log.read_text()):
        if time.time() > deadline:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


def test_a_cluster_that_fails_to_close_does_not_hide_the_stages_error(caplog):
    """Workers lost under load make distributed's teardown fail too (seen on speechocean762's mono:
    ``AssertionError: Status.starting`` from the nanny). The user must still see the error naming the
    failed job; the teardown's own error is logged beside it."""
    from weakalign.kaldi_steps.execution import Executor, JobFailed

    with pytest.raises(JobFailed, match="job 2 .* its worker was lost"):
        with Executor(2) as executor:
            cluster = executor.own_cluster
            real_close = cluster.close

            def close_then_fail(*args, **kwargs):
                real_close(*args, **kwargs)
                raise AssertionError("Status.starting")

            cluster.close = close_then_fail
            raise JobFailed("job 2 (worker tcp://127.0.0.1:1): grid_candidates failed: its worker was lost")
    assert "closing the Dask cluster failed (AssertionError: Status.starting)" in caplog.text
    assert executor.client is None and executor.own_cluster is None


def test_the_local_cluster_leaves_this_process_environment_alone(monkeypatch):
    """Dask's nanny sets OMP_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_=65536 in the parent before forking
    its workers; left there, the stages after a sharded one (the hybrid's training) would run on one
    thread, and its DDP ranks would inherit glibc's eager trimming (a third of their time in page faults)."""
    from weakalign.kaldi_steps.execution import Executor, nanny_env_vars

    assert {"OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"} <= set(nanny_env_vars())
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    with Executor(2) as executor:
        assert executor.client is not None
        assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "2"
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert "OMP_NUM_THREADS" not in os.environ and "MALLOC_TRIM_THRESHOLD_" not in os.environ


class _Cycle:
    """A garbage cycle whose finaliser records the process that frees it."""

    def __init__(self, record: Path):
        self.record, self.me = record, self

    def __del__(self):
        with open(self.record, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_forked_workers_never_free_this_process_garbage(tmp_path):
    """A worker forked while this process held uncollected cycles freed them in its own first
    collection, running destructors of objects it did not make (the likely cause of workers that
    aborted "Garbage-collecting"): the cycles must be freed here, before the fork, and only here."""
    import gc

    from weakalign.kaldi_steps.execution import Executor

    record = tmp_path / "freed_by"
    gc.disable()   # keep the cycle uncollected until the cluster starts, whenever gc would have run
    try:
        _Cycle(record)
        with Executor(2) as executor:
            gc.enable()
            executor.client.run(gc.collect)
    finally:
        gc.enable()
    gc.collect()
    assert record.read_text().split() == [str(os.getpid())]


def test_jobs_find_every_worker_however_often_the_client_refreshes_its_cache():
    """Dask's client refills its ``scheduler_info()`` cache without workers every
    ``scheduler-info-interval``; read from there, a cluster of 2 once looked empty mid-stage ("has
    no workers"; 19 times in 200 at a 1 ms interval). The workers must be asked of the scheduler."""
    import dask
    import distributed  # noqa: F401  -- its config defaults first: a set() of a key they lack would drop them on exit

    from weakalign.kaldi_steps.execution import Executor, cluster_workers

    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}), Executor(2) as executor:
        assert {len(cluster_workers(executor.client)) for _ in range(200)} == {2}


@pytest.mark.timeout(300)
def test_forked_workers_that_never_register_are_replaced_by_spawned_ones(monkeypatch, caplog):
    """The rare forked worker that hangs (a lock copied without its thread) must not end the stage
    after minutes: the cluster starts again with spawned workers, and the jobs run there."""
    from distributed import LocalCluster

    from weakalign.kaldi_steps import execution

    started = []
    real_start = execution._start_local_cluster

    def start(nj, method="fork"):
        started.append(method)
        if method == "fork":   # a cluster whose workers never come, as when the forked child hangs
            return LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0")
        return real_start(nj, method)

    monkeypatch.setattr(execution, "_start_local_cluster", start)
    monkeypatch.setitem(execution.WORKER_START_TIMEOUT_S, "fork", 1)
    with caplog.at_level(logging.WARNING, logger="weakalign"), execution.Executor(2) as executor:
        assert started == ["fork", "spawn"]
        assert len(execution.cluster_workers(executor.client)) == 2
        assert executor.map(operator.add, [(1, 2), (3, 4)], "add") == [3, 7]
    assert "did not all register in 1 s" in caplog.text

    def dies(nj, method="fork"):   # the other failure: LocalCluster raises as a forked worker dies at birth
        started.append(method)
        if method == "fork":
            raise RuntimeError("Nanny failed to start worker process")
        return real_start(nj, method)

    started.clear()
    monkeypatch.setattr(execution, "_start_local_cluster", dies)
    with caplog.at_level(logging.WARNING, logger="weakalign"), execution.Executor(2) as executor:
        assert started == ["fork", "spawn"] and executor.map(operator.add, [(5, 6)], "add") == [11]
    assert "a forked Dask worker failed to start" in caplog.text


def _open_feature_readers() -> int:
    from lhotse.features.io import lookup_reader_cache_or_open

    return lookup_reader_cache_or_open.cache_info().currsize


def test_forked_workers_do_not_share_this_process_open_feature_readers(an4_slice):
    """A Kaldi feats.scp reader Lhotse keeps open here would be inherited by every forked worker,
    one file offset shared by all: the cluster starts with none open, each worker opens its own."""
    from lhotse import CutSet

    from weakalign.kaldi_steps.execution import Executor

    cut = CutSet.from_file(an4_slice.mfcc_cuts("dev"))[0]
    assert cut.features.storage_type == "kaldiio"
    expected = cut.load_features()
    assert _open_feature_readers() >= 1
    with Executor(2) as executor:
        assert _open_feature_readers() == 0
        assert set(executor.client.run(_open_feature_readers).values()) == {0}
        loaded = executor.map(type(cut).load_features, [(cut,), (cut,)], "load")
    assert all(np.array_equal(x, expected) for x in loaded)


def test_nj_1_without_a_cluster_runs_in_this_process():
    from weakalign.kaldi_steps.execution import Executor

    with Executor(1) as executor:
        assert executor.client is None


def test_align_passes_cluster_and_nj_to_the_stages_with_jobs_only():
    from weakalign.pipeline.align_options import runtime_args
    from weakalign.pipeline.cli import cli

    address = "tcp://127.0.0.1:8786"
    assert runtime_args(cli.commands["mono"], 3, address) == ["--nj", "3", "--cluster", address]
    assert runtime_args(cli.commands["tri1"], 2, address) == ["--nj", "2", "--cluster", address]
    assert runtime_args(cli.commands["hybrid"], 2, address) == ["--nj", "2", "--cluster", address]
    for stage in ("prepare", "lang", "export", "export-kaldi"):   # no parallel jobs: neither option
        assert runtime_args(cli.commands[stage], 2, address) == [], stage
    assert runtime_args(cli.commands["mono"], 2, None) == ["--nj", "2"]
    assert "--cluster" in [o for p in cli.commands["align"].params for o in p.opts]


def test_a_finished_stage_asked_again_on_another_cluster_is_not_redone(an4_slice_tri1, tmp_path):
    """``weakalign mono --cluster ...`` and ``align --cluster ...`` on a workspace whose mono is done
    with the same options: already done, nothing contacted (no scheduler listens there), marker kept."""
    import shutil

    from click.testing import CliRunner

    from tests.fixtures_align import linked_workspace
    from weakalign.pipeline.cli import cli
    from weakalign.pipeline.stage import marker_path

    ws = linked_workspace(an4_slice_tri1, tmp_path, ali_dirs=(), data_dirs=("manifests", "mfcc", "lang"))
    for kind in ("done", "options"):
        (ws.exp / kind).mkdir()
        shutil.copy(an4_slice_tri1.exp / kind / "mono.json", ws.exp / kind / "mono.json")
    marker = marker_path(ws, "mono").read_bytes()
    roots = ["--data-root", str(ws.data_root), "--exp-root", str(ws.exp_root)]
    nowhere = "tcp://127.0.0.1:9"
    for args in (["mono", "an4", *roots, "--cluster", nowhere],
                 ["align", "an4", *roots, "--from", "mono", "--stop-after", "mono", "--cluster", nowhere]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert marker_path(ws, "mono").read_bytes() == marker


def test_workers_that_share_the_roots_pass_the_shared_filesystem_check(external_scheduler, tmp_path):
    """Every worker reads the probe written here and writes an answer this process reads; no
    probe or answer is left behind."""
    from distributed import Client

    from weakalign.kaldi_steps.execution import check_shared_filesystem

    roots = [tmp_path / "data" / "an4", tmp_path / "exp" / "an4"]
    with Client(external_scheduler, set_as_default=False) as client:
        check_shared_filesystem(client, roots)
    assert all(root.is_dir() and not list(root.iterdir()) for root in roots)


def test_workers_that_do_not_see_the_roots_stop_the_stage_before_its_jobs(external_scheduler, tmp_path, monkeypatch):
    """The external workers run in another directory than this process (moved to ``tmp_path``):
    a relative exp root names other files for them, as a root on a disk of this machine only
    would. The executor refuses the cluster, naming each worker and the path it missed."""
    from weakalign.kaldi_steps.execution import Executor, NotSharedFilesystem

    workers_cwd = os.getcwd()  # where the fixture started them
    monkeypatch.chdir(tmp_path)
    relative = Path(f"exp-{tmp_path.name}") / "an4"
    with pytest.raises(NotSharedFilesystem, match=(
            r"(?s)do not see this machine's files: the data and exp roots must be on a filesystem shared .*"
            rf"worker tcp://127\.0\.0\.1:\d+: cannot read or write {relative}/\.weakalign-probe-\w+ "
            rf"\(from {re.escape(workers_cwd)} on .*\n  worker tcp://127\.0\.0\.1:\d+: cannot read")):
        with Executor(2, external_scheduler, shared=(relative,)):
            pass
    assert not list((tmp_path / relative).iterdir())


def test_features_on_an_external_scheduler_are_the_in_process_arrays(an4_slice, external_scheduler, tmp_path):
    """The features stage's 2 chunks of dev run on the external workers (Lhotse's executor is the
    Dask client): the same cuts in the same order, and each cut's MFCC and fbank equal to the
    session fixture's (computed with nj=1 in this process)."""
    import numpy as np
    from lhotse import CutSet

    from tests.fixtures_align import linked_workspace
    from weakalign.pipeline.features import compute_features

    ws = linked_workspace(an4_slice, tmp_path, ali_dirs=(), data_dirs=("manifests",))
    compute_features(ws, nj=2, splits=["dev"], cluster=external_scheduler)
    for cuts_of in (lambda w: w.mfcc_cuts("dev"), lambda w: w.fbank_cuts("dev")):
        ours, reference = CutSet.from_file(cuts_of(ws)), CutSet.from_file(cuts_of(an4_slice))
        assert list(ours.ids) == list(reference.ids)
        # one archive per chunk: feats-<i>.lca (fbank, lilcom), feats-<i>/feats.scp (MFCC, Kaldi compressed)
        assert {re.search(r"feats-\d", c.features.storage_path).group() for c in ours} == {"feats-0", "feats-1"}
        for a, b in zip(ours, reference):
            np.testing.assert_array_equal(a.load_features(), b.load_features(), err_msg=a.id)
    assert ws.cmvn("dev").read_bytes() == an4_slice.cmvn("dev").read_bytes()


def test_a_calls_arguments_are_unpickled_once_per_worker_and_never_reused_by_the_next_call():
    """Each job of a call gets its own copy of the PackedArgs (Dask pickles it per actor call); the
    jobs on one worker share one unpickling, and a new call with equal arguments unpickles afresh."""
    import pickle

    from weakalign.kaldi_steps.execution import PackedArgs

    model = {"means": np.arange(6.0)}
    call = PackedArgs((model, 10.0), {"beam": 40.0})
    job1, job2 = (pickle.loads(pickle.dumps(call)) for _ in range(2))
    (args1, kwargs1), (args2, _) = job1.unpack(), job2.unpack()
    assert args1[0] is args2[0] and args1[0] is not model
    assert np.array_equal(args1[0]["means"], model["means"]) and kwargs1 == {"beam": 40.0}
    next_call = pickle.loads(pickle.dumps(PackedArgs((model, 10.0), {"beam": 40.0})))
    assert next_call.unpack()[0][0] is not args1[0]


@pytest.mark.timeout(300)
def test_no_shard_method_changes_its_arguments(an4_slice_tri1, an4_slice_tri3, tmp_path, monkeypatch):
    """The jobs of a call share its argument objects (in this process, and per worker through
    PackedArgs), so a Shard method must leave them as it found them: checked on every call of
    mono's training and WER check and of tri3's two-pass check (fMLLR passes, grid decodes)."""
    import pickle

    from weakalign.kaldi_steps import execution
    from weakalign.kaldi_steps.grid_score import ScoringGrid
    from weakalign.kaldi_steps.kaldi_io import read_model
    from weakalign.kaldi_steps.lang import Lang
    from weakalign.kaldi_steps.train_mono import mono_stage
    from weakalign.kaldi_steps.train_sat import decode_fmllr_wer, si_features
    from weakalign.pipeline.stage import run_stage

    checked = []
    call = execution.InProcessJobs.call

    def checking_call(self, method, *args, **kwargs):
        before = pickle.dumps((args, kwargs))
        out = call(self, method, *args, **kwargs)
        assert pickle.dumps((args, kwargs)) == before, f"Shard.{method} changed its arguments"
        checked.append(method)
        return out

    monkeypatch.setattr(execution.InProcessJobs, "call", checking_call)
    ws = _mono_workspace(an4_slice_tri1, tmp_path)
    run_stage("mono", ws, mono_stage, nj=1, **{**MONO_SLICE, "decode": True})
    tri3 = an4_slice_tri3.exp / "tri3"
    tm, am = read_model(tri3 / "final.mdl")
    with execution.Executor(nj=1) as in_process:
        decode_fmllr_wer(an4_slice_tri3, tri3, "test", in_process, tm, am, alimdl=read_model(tri3 / "final.alimdl")[1],
                         silence_phones=list(Lang.load(an4_slice_tri3.lang).silence_phone_ids),
                         features=si_features(tri3), grid=ScoringGrid((9, 12), (0.0,)))
    assert {"align", "acc_stats", "grid_candidates", "decode_at", "update_fmllr", "decode"} <= set(checked)
