#!/bin/bash
# usage: run_hybrid.sh NAME SEED [extra args]
name=$1; seed=$2; shift 2
cd /work/main
/usr/bin/time -v .venv/bin/weakalign hybrid an4 --data-root /work/ws/an4_data --exp-root /work/ws/an4_exp_$name \
  --nj 2 --procs 2 --seed $seed "$@" > /work/ws/s25_$name.log 2>&1
echo "rc=$?" >> /work/ws/s25_$name.log
