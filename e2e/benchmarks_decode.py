"""Decoding speed: real-time factor of greedy CTC and joint CTC/attention beam search.

On a fixed set of utterances (the first ``NUM_UTTS`` of the test split, by id, or of
dev when there is no test split), with the averaged model of the first trained run
found among ``RUNS`` (an untrained ``baseline`` model otherwise — its hypotheses run
to the maximum length, so its beam-search RTF is a worst case; the result says which).
Decoding runs single-threaded, as ``weakalign score`` does with ``--nj 1``.

The beam search runs twice on every batch, interleaved so that machine load hits both
alike: incremental (the decoder advances each hypothesis by one token, ``beam10_ctc0.3``)
and the full-prefix search (the decoder re-run over every prefix at every step, as before
the incremental search; ``beam10_ctc0.3_full_prefix``). Both share the CTC prefix scorer,
so ``beam_speedup``, the ratio of their times, is the gain of the incremental decoder
alone. ``beam_identical_hypotheses`` counts the utterances where both found the same best
token sequence (all of them, or the incremental search is wrong).
"""

from __future__ import annotations

import time

import torch

from weakalign.pipeline.workspace import Workspace

from .decode import DecodeOptions, _load_one, decode_batch, pad_feats

RUNS = ("baseline", "aux_ls0.5_l3", "ctc_only")
NUM_UTTS = 30


def _trained_run_dirs(ws: Workspace):
    """Run dirs of :data:`RUNS` with a model, each config's unseeded run first, then its seeds."""
    for run in RUNS:
        yield from (ws.exp / "e2e" / run, *sorted((ws.exp / "e2e").glob(f"{run}_seed*")))


def _model(ws: Workspace):
    # An untrained model emits long token loops that flatter the beam search's speed: a trained one first.
    for run_dir in _trained_run_dirs(ws):
        run = run_dir.name
        if (run_dir / "model_avg.pt").exists():
            from .build import load_for_inference

            model, tok, _ = load_for_inference(run_dir, "cpu")
            return model, tok.sos_id, tok.eos_id, f"trained run {run}"
    from .config import load_config
    from .build import build_model

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
        out["greedy_ctc"] = _timed_greedy(model, feats, frames, audio_s, sos, eos)
        out.update(_timed_beams(model, feats, frames, audio_s, sos, eos))
        return out
    finally:
        torch.set_num_threads(threads)


def _batches_of_8(feats):
    for i in range(0, len(feats), 8):
        yield pad_feats(feats[i:i + 8])


def _figures(seconds: float, tokens: int, frames: int, audio_s: float, utts: int) -> dict:
    return {"seconds": round(seconds, 3), "rtf": round(seconds / audio_s, 4),
            "frames_per_s": round(frames / seconds, 1), "tokens_per_utt": round(tokens / utts, 2)}


@torch.inference_mode()
def _timed_greedy(model, feats, frames: int, audio_s: float, sos: int, eos: int) -> dict:
    tokens, start = 0, time.perf_counter()
    for x, n in _batches_of_8(feats):
        tokens += sum(len(h) for h in decode_batch(model, x, n, DecodeOptions(mode="greedy"), sos, eos))
    return _figures(time.perf_counter() - start, tokens, frames, audio_s, len(feats))


@torch.inference_mode()
def _timed_beams(model, feats, frames: int, audio_s: float, sos: int, eos: int) -> dict:
    """The incremental and the full-prefix beam search, batch by batch in turn."""
    opts = DecodeOptions(mode="beam", beam=10, ctc_weight=0.3)
    seconds = {True: 0.0, False: 0.0}
    hyps: dict[bool, list] = {True: [], False: []}
    for x, n in _batches_of_8(feats):
        for incremental in (False, True):
            start = time.perf_counter()
            hyps[incremental] += decode_batch(model, x, n, opts, sos, eos, incremental=incremental)
            seconds[incremental] += time.perf_counter() - start
    figures = {incremental: _figures(seconds[incremental], sum(map(len, hyps[incremental])), frames, audio_s,
                                     len(feats)) for incremental in (True, False)}
    return {"beam10_ctc0.3": figures[True], "beam10_ctc0.3_full_prefix": figures[False],
            "beam_speedup": round(seconds[False] / seconds[True], 2),
            "beam_identical_hypotheses": sum(a == b for a, b in zip(hyps[True], hyps[False]))}


BENCHMARKS = [("e2e_decode_rtf", bench_decode)]
