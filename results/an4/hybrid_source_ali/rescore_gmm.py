"""A finished GMM system's WER check again with the current scoring (Kaldi's grid, every other LM weight
decoded; kaldi_steps/gmm.py decode_wer), for the tri1 of session 7's demo.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/hybrid_source_ali/rescore_gmm.py DATA_ROOT EXP_ROOT SYSTEM OUT.json
"""
import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first

import json
import sys
import time
from pathlib import Path

from weakalign.kaldi_steps.execution import Executor
from weakalign.kaldi_steps.gmm import decode_wer
from weakalign.kaldi_steps.kaldi_io import read_model
from weakalign.pipeline.workspace import Workspace

data_root, exp_root, system, out = sys.argv[1:5]
ws = Workspace("an4", data_root, exp_root)
tm, am = read_model(ws.exp / system / "final.mdl")
t0 = time.time()
with Executor(nj=1) as in_process:
    wer = decode_wer(ws, ws.exp / system, "test", in_process, tm, am)
keep = ("wer", "errors", "ins", "del", "sub", "words", "lm_weight", "penalty", "grid", "dev_wer")
result = {"system": system, "seconds": round(time.time() - t0, 1), **{k: wer.get(k) for k in keep}}
Path(out).write_text(json.dumps(result, indent=1) + "\n")
print({k: result[k] for k in ("system", "wer", "errors", "lm_weight", "penalty", "seconds")})
