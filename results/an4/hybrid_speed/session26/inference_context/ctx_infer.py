"""Inference context vs training context: frame accuracy (against tri1_ali, held-out/dev/test) and
WER of finished hybrid passes when the network sees other context at inference than in training."""
import json, sys, time
import kaldi_hmm_gmm  # noqa: F401  (before kaldifst)
import numpy as np, torch
from pathlib import Path
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.kaldi_io import read_ali_dir
from weakalign.kaldi_steps.hybrid import stage as st
from weakalign.kaldi_steps.hybrid.train import TrainConfig, evaluate, heldout_split

torch.set_num_threads(1)
exp_root, seed = sys.argv[1], int(sys.argv[2])
contexts = [tuple(map(int, c.split("/"))) for c in sys.argv[3].split(",")]
decode = len(sys.argv) > 4 and sys.argv[4] == "decode"
ws = Workspace("an4", "/work/ws/an4_data", exp_root)
inputs = st.HybridInputs.load(ws, "speaker", [], ["test"])
tri1 = read_ali_dir(ws.exp / "tri1_ali")
gmm = st._SourceModel.read(ws.exp / "tri1_ali")
rep = st.SkipReport("x")
tgt = {s: st.pdf_targets(f, tri1, gmm.tid2pdf, rep, 2) for s, f in inputs.by_split().items()}
utt2spk = {u: inputs.train[u][1] for u in tgt["train"]}
_, held = heldout_split(utt2spk, 0.05, seed)
sets = {"heldout": {u: tgt["train"][u] for u in held}, "dev": tgt["dev"], "test": tgt["test"]}
out = []
for pass_dir in ("hybrid_pass1", "hybrid"):
    p = st.load_finished_pass(ws, ws.exp / pass_dir)
    trained = p.train_config
    for lc, rc in contexts:
        cfg = TrainConfig(chunk_width=trained.chunk_width, left_context=lc, right_context=rc)
        row = {"exp": exp_root, "pass": pass_dir, "trained": [trained.left_context, trained.right_context],
               "infer": [lc, rc]}
        for name, data in sets.items():
            row[f"acc_tri1_{name}"] = round(evaluate(p.model, data, cfg)["frame_acc"], 4)
        if decode:
            t0 = time.time()
            w = st._decode_wer(ws, p.model, cfg, p.log_priors, p.trans_model, p.gmm_dir, nj=2,
                               scratch=Path(f"/tmp/ctx_scratch_{pass_dir}"))
            row.update(wer=w["wer"], errors=w["errors"], dev_wer=w["dev_wer"].get(f"{w['lm_weight']}_{w['penalty']}"),
                       decode_s=round(time.time() - t0, 1))
            row["point"] = [w.get(k) for k in ("lm_weight", "penalty")]
        print(json.dumps(row), flush=True)
