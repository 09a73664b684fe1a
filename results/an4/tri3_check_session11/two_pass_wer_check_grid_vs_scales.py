"""AN4 tri3's two-pass WER check (decode_fmllr_wer), Kaldi-grid scoring and the old six acoustic scales, on one
workspace's tri3 (session 10's, /work/s10gmm/ws).

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/tri3_check_session11/two_pass_wer_check_grid_vs_scales.py WORKSPACE OUT.json
"""
import kaldi_hmm_gmm as khg  # noqa: F401
import json, sys, time
from pathlib import Path
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.execution import Executor
from weakalign.kaldi_steps.kaldi_io import read_model
from weakalign.kaldi_steps.lang import Lang
from weakalign.kaldi_steps.train_sat import decode_fmllr_wer, si_features

root = Path(sys.argv[1]); ws = Workspace("an4", root / "data", root / "exp")
tm, am = read_model(ws.exp / "tri3" / "final.mdl"); _, alimdl = read_model(ws.exp / "tri3" / "final.alimdl")
out = {}
with Executor(nj=1) as ex:
    for scoring in ("kaldi-grid", "scales"):
        t = time.time()
        r = decode_fmllr_wer(ws, ws.exp / "tri3", "test", ex, tm, am, alimdl=alimdl,
                             silence_phones=list(Lang.load(ws.lang).silence_phone_ids),
                             features=si_features(ws.exp / "tri3"), scoring=scoring)
        r.pop("passes"); r["seconds"] = round(time.time() - t, 1); out[scoring] = r
        print(scoring, {k: r.get(k) for k in ("wer", "errors", "si_wer", "lm_weight", "penalty", "acoustic_scale", "seconds")}, flush=True)
Path(sys.argv[2]).write_text(json.dumps(out, indent=1) + "\n")
