"""One epoch of the hybrid BLSTM on the AN4 slice's real tri1 targets: one process vs 2 gloo DDP ranks.

The slice, the stages before the hybrid and the tiny model are the tests' (tests/fixtures_*.py,
tests/kaldi_steps/hybrid/test_ddp.py): run from the repository root with the venv's python,
``OMP_NUM_THREADS=1 .venv/bin/python results/an4/hybrid_ddp_slice/measure.py /tmp/somewhere``
(needs ../shared/corpora/an4); writes ``slice_losses.json`` beside this file.
"""

import kaldi_hmm_gmm  # noqa: F401  -- before kaldifst

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))


def slice_targets(root: Path):
    from tests.conftest import CORPORA
    from tests.fixtures_gmm import MONO_SLICE, TRI1_SLICE
    from tests.fixtures_pipeline import AN4_SLICE
    from weakalign.kaldi_steps.hybrid.realign import tid2pdf_array
    from weakalign.kaldi_steps.hybrid.stage import load_fbank, pdf_targets
    from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
    from weakalign.kaldi_steps.lang import lang_stage
    from weakalign.kaldi_steps.train_deltas import tri1_stage
    from weakalign.kaldi_steps.train_mono import mono_stage
    from weakalign.pipeline.corpora import prepare
    from weakalign.pipeline.features import compute_features
    from weakalign.pipeline.report import SkipReport
    from weakalign.pipeline.stage import run_stage
    from weakalign.pipeline.workspace import Workspace

    ws = Workspace("an4", data_root=root / "data", exp_root=root / "exp")
    run_stage("prepare", ws, prepare, src=CORPORA / "an4", **AN4_SLICE)
    run_stage("features", ws, compute_features, nj=1)
    run_stage("lang", ws, lang_stage)
    run_stage("mono", ws, mono_stage, nj=2, **MONO_SLICE)
    run_stage("tri1", ws, tri1_stage, nj=2, **TRI1_SLICE)
    trans_model, _ = read_model(ws.exp / "tri1_ali" / "final.mdl")
    targets = pdf_targets(load_fbank(ws, "train"), read_ali_dir(ws.exp / "tri1_ali"), tid2pdf_array(trans_model),
                          SkipReport("measure"), 2)
    return targets, int(trans_model.num_pdfs)


def main(root: Path) -> None:
    from tests.kaldi_steps.hybrid import test_ddp
    from weakalign.kaldi_steps.hybrid.train import train_hybrid

    train, held, model_cfg, cfg = test_ddp._ddp_setup(slice_targets(root), epochs=1)
    t0 = time.time()
    _, single = train_hybrid(train, held, model_cfg, cfg, root / "single")
    single_s = time.time() - t0
    t0 = time.time()
    ranks = test_ddp._run_ddp((train, held, model_cfg, cfg), root / "ddp", root)
    out = {"model": model_cfg.to_dict(), "train_config": cfg.to_dict(), "train_utterances": len(train),
           "heldout_utterances": len(held), "one_process": single.history[0],
           "two_gloo_ranks": [r["history"][0] for r in ranks],
           "seconds": {"one_process_1_thread": round(single_s, 1),
                       "two_ranks_incl_process_start": round(time.time() - t0, 1)}}
    (HERE / "slice_losses.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["one_process"]), json.dumps(out["two_gloo_ranks"][0]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
