#!/bin/bash
# alternating before (/work/cc @2b3459e) / after (/work/main) runs of bench_gmm_align_dask, idle machine
pids=$(pgrep -f "exp8/.venv/bin/python"); kill -STOP $pids; sleep 2
for i in 1 2 3 4 5; do
  for side in cc main; do
    (cd /work/$side && OMP_NUM_THREADS=1 .venv/bin/python /tmp/bench_dask1.py 2>/dev/null | sed "s/^/$side /")
  done
done
kill -CONT $pids
