"""Benchmarks of the hybrid stage: BLSTM training throughput and memory, realignment throughput.

Both need ``exp/<c>/tri1_ali`` (the tri1 stage) and the fbank features; the realignment
benchmark uses ``exp/<c>/hybrid/final.pt`` when the hybrid stage has run (else an
untrained network of the default size, which aligns as fast but badly; the result says which).
"""

from __future__ import annotations

import inspect
import os
import resource
import time

import numpy as np
import torch

from weakalign.pipeline.report import SkipReport

from . import realign as ha
from ..gmm import TrainingGraphs
from .stage import hybrid_stage, load_fbank, pdf_targets
from .model import HybridConfig
from .train import TrainConfig, _batch_loss, _chunks, build_model, load_model, resolve_device

TRAIN_STEPS = 30
REALIGN_UTTS = 200


def _defaults() -> dict:
    return {k: p.default for k, p in inspect.signature(hybrid_stage).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _load(ws):
    from ..kaldi_io import read_ali_dir, read_model, read_tree

    ali_dir = ws.exp / "tri1_ali"
    trans_model, _ = read_model(ali_dir / "final.mdl")
    feats = load_fbank(ws, "train")
    targets = pdf_targets(feats, read_ali_dir(ali_dir), ha.tid2pdf_array(trans_model), SkipReport("bench"), 2)
    return trans_model, read_tree(ali_dir / "tree"), feats, targets


def bench_hybrid_train(ws, nj: int) -> dict:
    """Frames/s of ``TRAIN_STEPS`` optimiser steps of the default-size BLSTM on real chunks."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))   # as the stage: see hybrid.py
    d = _defaults()
    trans_model, _, _, targets = _load(ws)
    device = resolve_device("auto")
    cfg = TrainConfig(batch_size=d["batch_size"], chunk_width=d["chunk_width"], left_context=d["left_context"],
                      right_context=d["right_context"], device=str(device))
    model_cfg = HybridConfig(num_pdfs=int(trans_model.num_pdfs), cells=d["cells"], proj=d["proj"],
                             layers=d["layers"], dropout=d["dropout"])
    torch.manual_seed(0)
    model = build_model(model_cfg, None, device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    chunks = _chunks(targets, cfg)
    # Repeated if the corpus has fewer chunks than the benchmark needs.
    order = np.resize(np.random.default_rng(0).permutation(len(chunks)), (TRAIN_STEPS + 2) * cfg.batch_size)
    rss_before = _peak_rss_mb()
    sup_frames = in_frames = 0
    start = None
    for step in range(TRAIN_STEPS + 2):
        if step == 2:       # the first steps warm up allocators
            start, sup_frames, in_frames = time.time(), 0, 0
        batch = [chunks[i] for i in order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
        loss, frames, _ = _batch_loss(model, targets, batch, device)
        optimizer.zero_grad()
        (loss / frames).backward()
        optimizer.step()
        sup_frames += frames
        in_frames += sum(w1 - w0 for _, w0, w1, _, _ in batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - start
    result = {"device": str(device), "threads": torch.get_num_threads(), "model": model_cfg.to_dict(),
              "batch_size": cfg.batch_size, "chunk": [cfg.left_context, cfg.chunk_width, cfg.right_context],
              "steps": TRAIN_STEPS, "seconds": round(seconds, 2),
              "train_frames_per_s": round(sup_frames / seconds, 1),
              "input_frames_per_s": round(in_frames / seconds, 1),
              "peak_rss_mb": round(_peak_rss_mb(), 1), "peak_rss_before_training_mb": round(rss_before, 1),
              "params": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def bench_hybrid_realign(ws, nj: int) -> dict:
    """Frames/s of the realignment: network forward alone, alignment alone (``nj`` workers), both."""
    from ..lang import Lang

    torch.set_num_threads(1)
    d = _defaults()
    trans_model, ctx_dep, feats, targets = _load(ws)
    model_path = ws.exp / "hybrid" / "final.pt"
    if model_path.exists():
        model, trained = load_model(model_path, "cpu"), True
    else:
        torch.manual_seed(0)
        model = build_model(HybridConfig(num_pdfs=int(trans_model.num_pdfs), cells=d["cells"], proj=d["proj"],
                                         layers=d["layers"]), None, torch.device("cpu")).eval()
        trained = False
    priors = np.full(trans_model.num_pdfs, 1.0 / trans_model.num_pdfs)
    prior_path = ws.exp / "hybrid" / "priors.npy"
    if prior_path.exists():
        priors = np.load(prior_path)
    log_priors = np.log(priors).astype(np.float32)
    lang = Lang.load(ws.lang)
    utts = sorted(targets)[:REALIGN_UTTS]
    frames = sum(len(targets[u][1]) for u in utts)

    start = time.time()
    scores = {}
    for u in utts:
        lp = model.utterance_log_probs(torch.from_numpy(targets[u][0]), d["chunk_width"], d["left_context"],
                                       d["right_context"]).numpy()
        scores[u] = ha.pseudo_log_likelihoods(lp, log_priors, d["acoustic_scale"])
    forward_s = time.time() - start

    graphs = TrainingGraphs(lang, trans_model, ctx_dep)
    tasks = [(u, lang.words_to_ids(feats[u][2].split()), lambda u=u: scores[u]) for u in utts]
    start = time.time()
    results = list(ha.align_utterances(tasks, compile_graph=graphs, trans_model=trans_model, nj=nj,
                                       beam=d["beam"], retry_beam=d["retry_beam"]))
    align_s = time.time() - start
    return {"utterances": len(utts), "frames": frames, "trained_model": trained, "nj": nj,
            "forward_frames_per_s": round(frames / forward_s, 1),
            "align_frames_per_s": round(frames / align_s, 1),
            "realign_frames_per_s": round(frames / (forward_s + align_s), 1),
            "note": "realign = forward (main process) + graph compilation and alignment (nj workers), "
                    "run one after the other here; the stage overlaps them",
            "failed": sum(r.alignment is None for r in results)}


BENCHMARKS = [("hybrid_train", bench_hybrid_train), ("hybrid_realign", bench_hybrid_realign)]
