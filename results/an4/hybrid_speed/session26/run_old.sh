#!/bin/bash
# The hybrid stage as it was before issue #17 (a40fc9e = 75ace2c^), on a copy of the same workspace's tri1.
cd /work/ws
PYTHONPATH=/work/oldpkg /usr/bin/time -v /work/main/.venv/bin/python -c "import sys; from weakalign.pipeline.cli import cli; sys.argv[0] = \"weakalign\"; cli()" hybrid an4 \
  --data-root /work/ws/an4_data --exp-root /work/ws/an4_exp_old_s0 --nj 2 --seed 0 > /work/ws/s26_old_s0.log 2>&1
echo "rc=$?" >> /work/ws/s26_old_s0.log
