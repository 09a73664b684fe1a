#!/bin/bash
# The hybrid stage as it was before issue #17 (a40fc9e = 75ace2c^), on a copy of the same workspace's tri1.
# /work/oldpkg/weakalign was made from a worktree of a40fc9e (git worktree add /work/old/weakalign a40fc9e):
#   its weakalign_ns/__init__.py copied in, and symlinks pipeline kaldi_steps align e2e conf -> the worktree's
#   folders, so PYTHONPATH=/work/oldpkg imports the old package ahead of the installed one (same venv).
cd /work/ws
PYTHONPATH=/work/oldpkg /usr/bin/time -v /work/main/.venv/bin/python -c "import sys; from weakalign.pipeline.cli import cli; sys.argv[0] = \"weakalign\"; cli()" hybrid an4 \
  --data-root /work/ws/an4_data --exp-root /work/ws/an4_exp_old_s0 --nj 2 --seed 0 > /work/ws/s26_old_s0.log 2>&1
echo "rc=$?" >> /work/ws/s26_old_s0.log
