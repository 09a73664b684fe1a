"""A Dask scheduler and workers started as a user would, for the tests of the execution layer's
``cluster`` option (the GMM stages, the features, E2E scoring, the sweep runner)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def external_scheduler(tmp_path_factory):
    """The address of a Dask scheduler with 2 single-thread worker processes (under nannies, which
    restart a killed one), all on 127.0.0.1; stopped after the module's tests. They can import the
    tests' modules (a function a test sends them is pickled by its module's name)."""
    import os

    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = folder / "scheduler.json"
    # The scheduler unpickles the tasks too, so it needs the tests' modules as well as the workers.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    with open(folder / "dask.log", "wb") as log:
        scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(scheduler_file)], stdout=log, stderr=log, env=env)
        workers = subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
                                    "--nworkers", "2", "--nthreads", "1", "--no-dashboard"], stdout=log, stderr=log,
                                   env=env)
    try:
        with Client(scheduler_file=str(_wait_for(scheduler_file)), set_as_default=False) as client:
            client.wait_for_workers(2, timeout=180)
            yield client.scheduler.address
    finally:
        for proc in (workers, scheduler):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(path: Path, timeout: float = 60) -> Path:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"no {path} within {timeout} s"
        time.sleep(0.1)
    return path
