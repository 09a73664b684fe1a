"""The hybrid's WER check of a finished pass again, its decode in ``NJ`` Dask jobs (issue #17):
the same code as the stage (kaldi_steps/hybrid/stage.py ``_decode_wer``), after a local cluster
has been opened and closed in this process as the realignment does before it.

    OMP_NUM_THREADS=1 .venv/bin/python results/speechocean762/hybrid_decode_in_jobs/decode_in_jobs.py \
        CORPUS DATA_ROOT EXP_ROOT HYBRID_DIR NJ OUT.json

Written for the check that the jobs' decode finds what the one-process decode found (the pass's
own diagnostics.json) on speechocean762's full dev, where session 15's first attempt hung.
"""
import kaldi_hmm_gmm  # noqa: F401  -- keep first

import json
import sys
import time
from pathlib import Path

import torch

from weakalign.kaldi_steps.execution import Executor
from weakalign.kaldi_steps.hybrid.stage import _decode_wer, load_finished_pass
from weakalign.pipeline.workspace import Workspace

corpus, data_root, exp_root, hybrid_dir, nj, out = sys.argv[1:7]
nj = int(nj)
torch.set_num_threads(1)
ws = Workspace(corpus, data_root, exp_root)
d = ws.exp / hybrid_dir
p = load_finished_pass(ws, d)
diag, gmm = p.diagnostics, p.gmm_dir.name
with Executor(nj):   # the realignment's cluster, opened and closed before the decode's
    pass
t0 = time.time()
with torch.no_grad():
    wer = _decode_wer(ws, p.model, p.train_config, p.log_priors, p.trans_model, p.gmm_dir, nj=nj,
                      scratch=d / "decode_scratch_check")
keep = ("wer", "errors", "ins", "del", "sub", "words", "wer_set", "lm_weight", "penalty", "dev_wer")
earlier = diag.get("wer_details") or {}
result = {"corpus": corpus, "hybrid_dir": str(d), "gmm": gmm, "nj": nj, "seconds": round(time.time() - t0, 1),
          "one_process": {"seconds": (diag.get("times") or {}).get("decode_s"),
                          **{k: earlier.get(k) for k in keep}},
          "jobs": {k: wer.get(k) for k in keep}}
result["same_dev_wers_and_point"] = all(result["one_process"][k] == result["jobs"][k]
                                        for k in ("dev_wer", "lm_weight", "penalty", "wer", "errors"))
Path(out).write_text(json.dumps(result, indent=1) + "\n")
print({k: result[k] for k in ("nj", "seconds", "same_dev_wers_and_point")}, result["jobs"]["wer"])
