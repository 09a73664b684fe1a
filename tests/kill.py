"""``kill -9`` in the middle of a run, for the interruption tests."""

import os
import signal
import subprocess
import sys
import time
from typing import Callable


def kill_when(code: str, ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Run ``python -c code`` in a process group of its own and SIGKILL the whole group (the
    process and any job processes it started) as soon as ``ready()`` holds; fail if the run
    ends or ``timeout`` seconds pass before that (``what`` names the moment awaited)."""
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended before {what}"
            assert time.time() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
