"""Score a finished hybrid pass again with the current WER check (Kaldi's grid, every other LM weight
decoded; kaldi_steps/hybrid/stage.py _decode_wer), on the HCLG of the GMM system it was trained from.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/hybrid_source_ali/rescore_hybrid.py DATA_ROOT EXP_ROOT HYBRID_DIR OUT.json

Used to put the tri1-based hybrid of session 7's demo (scored then with the old acoustic-scale search)
beside the tri3-based one on one scoring.
"""
import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first

import json
import sys
import time
from pathlib import Path

import torch

from weakalign.kaldi_steps.hybrid.stage import _decode_wer, load_finished_pass
from weakalign.pipeline.workspace import Workspace

data_root, exp_root, hybrid_dir, out = sys.argv[1:5]
torch.set_num_threads(1)
ws = Workspace("an4", data_root, exp_root)
d = Path(exp_root) / "an4" / hybrid_dir
p = load_finished_pass(ws, d)
diag, gmm = p.diagnostics, p.gmm_dir.name
t0 = time.time()
with torch.no_grad():
    wer = _decode_wer(ws, p.model, p.train_config, p.log_priors, p.trans_model, p.gmm_dir)
keep = ("wer", "errors", "ins", "del", "sub", "words", "wer_set", "lm_weight", "penalty", "grid", "dev_wer")
result = {"hybrid_dir": str(d), "gmm": gmm, "pass": diag.get("pass"), "source": diag.get("source"),
          "frame_acc_heldout": diag["frame_acc_heldout"], "frame_acc_dev": diag.get("frame_acc_dev"),
          "wer_at_training_time": diag.get("wer"), "seconds": round(time.time() - t0, 1),
          **{k: wer.get(k) for k in keep}}
Path(out).write_text(json.dumps(result, indent=1) + "\n")
print({k: result[k] for k in ("gmm", "pass", "wer", "errors", "lm_weight", "penalty", "frame_acc_heldout", "seconds")})
