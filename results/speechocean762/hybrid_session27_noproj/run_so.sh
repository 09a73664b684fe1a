#!/bin/bash
cd /work/main
/usr/bin/time -v .venv/bin/weakalign hybrid speechocean762 --data-root /work/ws/so_data --exp-root /work/ws/so_exp_s27 \
  --nj 2 --procs 2 --seed 0 --source-ali tri1_ali > /work/s27/so_hybrid.log 2>&1
echo "rc=$?" >> /work/s27/so_hybrid.log
