# Session 15: does Executor(2).map hang on two tasks of ~272 MiB of numpy arrays (as the reverted
# parallel hybrid decode did)? Usage: python dask_large_task_check.py 272
import time, numpy as np, logging
logging.basicConfig(level=logging.INFO)
from weakalign.kaldi_steps.execution import Executor
def job(items, k):
    return {u: float(x.sum()) for u, x in items}
if __name__ == "__main__":
    import sys
    mb = int(sys.argv[1])
    n = 130
    per = mb * 2**20 // 8 // n
    shares = [[(f"u{j}_{i}", np.random.rand(per)) for i in range(n)] for j in range(2)]
    t = time.time()
    with Executor(2) as ex:
        out = ex.map(job, [(s, 1) for s in shares], "test")
    print(mb, "MiB per task:", len(out), "jobs in", round(time.time() - t, 1), "s")
