"""Test WER per utterance of the finished pass-2 networks, old default (256 cells, projection 128) vs new
(192 cells, no projection), seeds 0 and 1, each decoded at its own dev-picked grid point (the stage's figure,
checked against its diagnostics) and at one common point (7, 0.0); pooled paired sign-flip test over both seeds.

    python paired_test_wer.py WS_ROOT > paired_test_wer.json
(WS_ROOT holds data and the four exp roots named below; the networks themselves stay in exp/, not committed.)
"""
import json
import sys
from pathlib import Path

import kaldialign
import numpy as np

import weakalign  # noqa: F401  (kaldi_hmm_gmm before kaldifst)
from weakalign.e2e.significance import paired_permutation_test
from weakalign.kaldi_steps.execution import Executor
from weakalign.kaldi_steps.graph import _word_table, word_strings
from weakalign.kaldi_steps.hybrid.stage import decoding_graph, inference_chunking, likelihood_ratios, load_fbank
from weakalign.kaldi_steps.hybrid.train import load_model
from weakalign.kaldi_steps.kaldi_io import read_model
from weakalign.kaldi_steps.mapped_decode import decode_point_in_jobs, write_loglike_arks
from weakalign.pipeline.workspace import Workspace

root = Path(sys.argv[1])
RUNS = {("old", 0): "an4_exp_def26_s0", ("new", 0): "an4_exp_c192_s0",
        ("old", 1): "an4_exp_base_s1", ("new", 1): "an4_exp_c192_s1"}
COMMON = (7, 0.0)
out, errors = {"common_point": COMMON, "runs": {}}, {}
for (system, seed), name in RUNS.items():
    ws = Workspace("an4", root / "an4_data", root / name)
    diag = json.loads((ws.exp / "hybrid" / "diagnostics.json").read_text())
    model = load_model(ws.exp / "hybrid" / "final.pt", "cpu").eval()
    log_priors = np.log(np.load(ws.exp / "hybrid" / "priors.npy")).astype(np.float32)
    opts = {k: diag["train_config"][k] for k in ("chunk_width", "left_context", "right_context")}
    cfg = inference_chunking(**opts)
    trans_model, _ = read_model(ws.exp / "tri1" / "final.mdl")
    graph = decoding_graph(ws, ws.exp / "tri1")
    table = _word_table(graph / "words.txt")
    feats = load_fbank(ws, "test", model.config.input_cmn)
    refs = {u: t.split() for u, (_, _, t) in feats.items()}
    arks, order = write_loglike_arks(likelihood_ratios(model, cfg, log_priors, feats), root / "paired_scratch", 2)
    picked = (diag["wer_details"]["lm_weight"], diag["wer_details"]["penalty"])
    run = {"exp": name, "picked_point": picked, "stage_test_wer": diag["wer"], "stage_test_errors": diag["wer_details"]["errors"]}
    with Executor(2, None, shared=(root,)) as executor:
        for label, (w, p) in (("picked", picked), ("common", COMMON)):
            hyps = decode_point_in_jobs(arks, order, graph / "HCLG.fst", trans_model, w, p, executor)
            per = {u: kaldialign.edit_distance(refs[u], word_strings(table, hyps.get(u, [])))["total"] for u in sorted(refs)}
            errors[(system, seed, label)] = per
            run[f"{label}_errors"] = sum(per.values())
            run[f"{label}_wer"] = round(100 * sum(per.values()) / sum(len(r) for r in refs.values()), 2)
    run["words"] = sum(len(r) for r in refs.values())
    out["runs"][f"{system}_seed{seed}"] = run
    print(run, file=sys.stderr, flush=True)
    utts = sorted(refs)
    out.setdefault("per_utterance_words", {u: len(refs[u]) for u in utts})

words = out["per_utterance_words"]
utts = sorted(words)
for label in ("picked", "common"):
    a = np.concatenate([[errors[("old", s, label)][u] for u in utts] for s in (0, 1)])
    b = np.concatenate([[errors[("new", s, label)][u] for u in utts] for s in (0, 1)])
    w = np.concatenate([[words[u] for u in utts] for _ in (0, 1)])
    out[f"pooled_paired_test_{label}"] = paired_permutation_test(a, b, w)
out["per_utterance_errors"] = {f"{s}_seed{k}_{lab}": v for (s, k, lab), v in errors.items()}
json.dump(out, sys.stdout, indent=1)
