"""Decoding speed: real-time factor of greedy CTC and joint CTC/attention beam search.

On a fixed set of utterances (the first ``NUM_UTTS`` of the test split, by id, or of
dev when there is no test split), with the averaged model of the first trained run
found among ``RUNS`` (an untrained ``baseline`` model otherwise — its hypotheses run
to the maximum length, so its beam-search RTF is a worst case; the result says which).
Decoding runs single-threaded, as ``weakalign score`` does with ``--nj 1``.
"""

from __future__ import annotations

import time

import torch

from weakalign.pipeline.workspace import Workspace

from .decode import DecodeOptions, _load_one, decode_batch, pad_feats

RUNS = ("baseline", "aux_ls0.5_l3", "ctc_only")
NUM_UTTS = 30


def _model(ws: Workspace):
    for run in RUNS:
        run_dir = ws.exp / "e2e" / run
        if (run_dir / "model_avg.pt").exists():
            from .model import load_for_inference

            model, tok, _ = load_for_inference(run_dir, "cpu")
            return model, tok.sos_id, tok.eos_id, f"trained run {run}"
    from .config import load_config
    from .model import build_model

    config = load_config("baseline", corpus=ws.corpus)
    vocab = int(config.get("vocab_size", 100))
    return build_model(config, vocab).eval(), vocab - 1, vocab - 1, "untrained baseline (no trained run found)"


def _cuts(ws: Workspace):
    from lhotse import CutSet

    split = "test" if ws.fbank_cuts("test").exists() else "dev"
    cuts = sorted(CutSet.from_file(ws.fbank_cuts(split)), key=lambda c: c.id)[:NUM_UTTS]
    return split, cuts


def bench_decode(ws: Workspace, nj: int) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, sos, eos, which = _model(ws)
        split, cuts = _cuts(ws)
        feats = [_load_one(c) for c in cuts]
        audio_s = sum(c.duration for c in cuts)
        frames = sum(f.shape[0] for f in feats)
        out = {"model": which, "split": split, "utterances": len(cuts), "audio_s": round(audio_s, 2),
               "frames": frames, "torch_threads": 1}
        for name, opts in (("greedy_ctc", DecodeOptions(mode="greedy")),
                           ("beam10_ctc0.3", DecodeOptions(mode="beam", beam=10, ctc_weight=0.3))):
            tokens, start = 0, time.perf_counter()
            with torch.inference_mode():
                for i in range(0, len(feats), 8):   # batches of 8 utterances
                    x, n = pad_feats(feats[i:i + 8])
                    tokens += sum(len(h) for h in decode_batch(model, x, n, opts, sos, eos))
            seconds = time.perf_counter() - start
            out[name] = {"seconds": round(seconds, 3), "rtf": round(seconds / audio_s, 4),
                         "frames_per_s": round(frames / seconds, 1), "tokens_per_utt": round(tokens / len(cuts), 2)}
        return out
    finally:
        torch.set_num_threads(threads)


BENCHMARKS = [("e2e_decode_rtf", bench_decode)]
