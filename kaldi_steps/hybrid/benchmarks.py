"""Benchmarks of the hybrid stage: BLSTM training throughput and memory, realignment throughput,
the WER check's decode in one job vs ``nj``.

All need ``exp/<c>/tri1_ali`` (the tri1 stage) and the fbank features; the realignment
benchmark uses ``exp/<c>/hybrid/final.pt`` when the hybrid stage has run (else an
untrained network of the default size, which aligns as fast but badly; the result says which).
The decode benchmark needs the finished hybrid stage (a trained network's scores and its HCLG).
"""

from __future__ import annotations

import inspect
import os
import resource
import shutil
import time
from dataclasses import replace

import numpy as np
import torch

from weakalign.pipeline.report import SkipReport

from . import realign as ha
from ..shard import TrainingGraphs
from .stage import INFERENCE_CHUNKING, blocked_log_probs, hybrid_stage, inference_chunking, load_fbank, pdf_targets
from .model import HybridConfig
from .train import TrainConfig, _batch_loss, _chunks, build_model, load_model, resolve_device

TRAIN_STEPS = 30
REALIGN_UTTS = 200
DECODE_UTTS = 60


def _defaults() -> dict:
    return {k: p.default for k, p in inspect.signature(hybrid_stage).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _infer_config(d: dict) -> TrainConfig:
    """The chunking the stage's defaults realign and decode with."""
    return inference_chunking(**{o: d[o] for o in INFERENCE_CHUNKING})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _load(ws, cmn: str = "global"):
    """tri1's model and tree, train fbank (normalised as ``cmn`` says) and their pdf targets."""
    from ..kaldi_io import read_ali_dir, read_model, read_tree

    ali_dir = ws.exp / "tri1_ali"
    trans_model, _ = read_model(ali_dir / "final.mdl")
    feats = load_fbank(ws, "train", cmn)
    targets = pdf_targets(feats, read_ali_dir(ali_dir), ha.tid2pdf_array(trans_model), SkipReport("bench"), 2)
    return trans_model, read_tree(ali_dir / "tree"), feats, targets


def flops_per_input_frame(cfg: HybridConfig) -> int:
    """Training FLOPs of one input frame (forward + backward = 3x forward): per layer and direction
    ``2 (4H·I + 4H·P + H·P)`` (input and recurrent gates, projection), then the output layer.

    >>> flops_per_input_frame(HybridConfig(num_pdfs=259))
    13720320
    """
    proj, out = cfg.projection, cfg.layer_output
    fwd, inp = 0, cfg.feat_dim
    for _ in range(cfg.layers):
        fwd += 2 * 2 * (4 * cfg.cells * inp + 4 * cfg.cells * out + cfg.cells * proj)
        inp = 2 * out
    fwd += 2 * inp * cfg.num_pdfs
    return 3 * fwd


def _time_steps(step_fn, batches) -> tuple[float, int, int]:
    """Seconds of ``step_fn`` over ``batches`` after two warm-up steps; supervised and computed frames."""
    sup = computed = 0
    start = None
    for i, batch in enumerate(batches):
        if i == 2:
            start, sup, computed = time.perf_counter(), 0, 0
        s, c = step_fn(batch)
        sup, computed = sup + s, computed + c
    return time.perf_counter() - start, sup, computed


#: Local DDP ranks of the stage as ``make align`` trains it (the Makefile's ``HYBRID_PROCS``).
STAGE_PROCS = 2
#: The stage's network before session 27 (and before issue #17): 256 cells with a projection of 128,
#: which ATen steps itself; the default now has no projection, which oneDNN runs fused.
OLD_MODEL = {"cells": 256, "proj": 128}


def _train_setup(ws, steps: int):
    """The stage's default model and chunking, the train targets, and ``steps + 2`` seeded
    minibatches of chunk ids (repeated if the corpus has fewer chunks than the benchmark needs)."""
    d = _defaults()
    trans_model, _, _, targets = _load(ws)
    cfg = TrainConfig(batch_size=d["batch_size"], chunk_width=d["chunk_width"], left_context=d["left_context"],
                      right_context=d["right_context"])
    model_cfg = HybridConfig(num_pdfs=int(trans_model.num_pdfs), cells=d["cells"], proj=d["proj"],
                             layers=d["layers"], dropout=d["dropout"])
    order = np.resize(np.random.default_rng(0).permutation(len(_chunks(targets, cfg))), (steps + 2) * cfg.batch_size)
    batches = [order[s * cfg.batch_size:(s + 1) * cfg.batch_size].tolist() for s in range(steps + 2)]
    return model_cfg, cfg, targets, batches


def _fresh_model(model_cfg, cfg, device):
    torch.manual_seed(0)
    model = build_model(model_cfg, None, device).train()
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr)


def _stage_trainer_steps(ws, device: str, steps: int) -> tuple[float, int, int]:
    """On each DDP rank: ``steps`` steps of the stage's trainer as :func:`.train._train_loop`
    takes them (each rank its ``rank::world_size`` share of every minibatch, the loss per frame of
    the whole minibatch); rank 0's seconds between barriers after two warm-up steps, and the
    supervised and computed frames of all ranks."""
    from weakalign.pipeline.distributed import barrier, setup_distributed

    from .train import ChunkTable, train_step

    rank, world_size, local_rank = setup_distributed(device)
    dev = resolve_device(device, local_rank if world_size > 1 else None)
    model_cfg, cfg, targets, batches = _train_setup(ws, steps)
    table = ChunkTable(targets, cfg)
    model, optimizer = _fresh_model(model_cfg, cfg, dev)
    net = model if world_size == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None)
    for i, batch in enumerate(batches):
        if i == 2:
            barrier()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        train_step(net, model, optimizer, table, batch, cfg.grad_clip, dev, rank, world_size)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    barrier()
    secs = time.perf_counter() - start
    timed = batches[2:]
    computed = sum(len(ids) * int(table.lens[torch.as_tensor(ids)].max())
                   for batch in timed for ids in (batch[r::world_size] for r in range(world_size)) if ids)
    return secs, sum(table.frames(batch) for batch in timed), computed


def _old_trainer_steps(model_cfg, cfg, targets, batches, threads: int) -> tuple[float, int, int]:
    """The steps of ``batches`` but two by the trainer before issue #17 (chunks assembled in Python, packed
    ``nn.LSTM``) in this process at ``threads`` threads: seconds after two warm-up steps, supervised
    and computed frames."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    chunks = _chunks(targets, cfg)
    model, optimizer = _fresh_model(model_cfg, cfg, torch.device("cpu"))

    def step(ids):
        batch = [chunks[i] for i in ids]
        loss, frames, _ = _batch_loss(model, targets, batch, torch.device("cpu"), packed=True)
        optimizer.zero_grad()
        (loss / frames).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return frames, sum(w1 - w0 for _, w0, w1, _, _ in batch)

    try:
        return _time_steps(step, batches)
    finally:
        torch.set_num_threads(before)


def _rates(fpf: int, secs: float, sup: int, computed: int, peak: float) -> dict:
    gflops = fpf * computed / secs / 1e9
    return {"seconds": round(secs, 2), "supervised_frames": sup, "computed_frames": computed,
            "train_frames_per_s": round(sup / secs, 1), "computed_frames_per_s": round(computed / secs, 1),
            "flops_per_supervised_frame": round(fpf * computed / sup),
            "achieved_gflops": round(gflops, 2), "share_of_matmul_peak": round(gflops / peak, 3)}


def matmul_gflops_by_library(n: int = 1024) -> dict[str, float]:
    """The fp32 ``n x n`` product's GFLOP/s through MKL (``torch.matmul``) and through oneDNN (the
    library that runs the default LSTM): on an AMD CPU with AVX-512 MKL takes its AVX2 code and
    reaches about half of what oneDNN does, so the faster of the two is the machine's rate."""
    from weakalign.e2e.benchmarks import best_gflops, matmul_gflops

    rates = {"mkl": matmul_gflops(n)}
    if torch.backends.mkldnn.is_available():
        a, b = torch.randn(n, n).to_mkldnn(), torch.randn(n, n).to_mkldnn()
        rates["onednn"] = best_gflops(lambda: torch._C._nn.mkldnn_linear(a, b), 2 * n ** 3)
    return rates


def bench_hybrid_train(ws, nj: int, steps: int = TRAIN_STEPS) -> dict:
    """Supervised frames/s of ``steps`` optimiser steps of the default-size BLSTM on real chunks,
    the FLOPs per supervised frame and the share of the machine's fp32 matmul throughput reached
    (:func:`matmul_gflops_by_library`):

    - ``trainer``: the stage's trainer as ``make align`` runs it, :data:`STAGE_PROCS` DDP ranks of
      ``cores / ranks`` threads on CPU (one process on CUDA), against the matmul rate of all cores;
    - ``old_trainer``: the trainer before issue #17 (Python chunk assembly, packed ``nn.LSTM``) at one
      thread, as the stage then ran inside ``make align`` (RESULTS.md), against the 1-thread rate.
      Half its steps run before the ranks and half after, so a change of machine load shows.
    """
    from weakalign.pipeline.distributed import launch_local_ranks

    device = resolve_device("auto")
    cores = os.cpu_count() or 1
    procs = 1 if device.type == "cuda" else min(STAGE_PROCS, cores)
    model_cfg, cfg, targets, batches = _train_setup(ws, steps)
    old_cfg = replace(model_cfg, **OLD_MODEL)
    fpf, old_fpf = flops_per_input_frame(model_cfg), flops_per_input_frame(old_cfg)
    rss_before = _peak_rss_mb()
    half = 2 + steps // 2
    old = [_old_trainer_steps(old_cfg, cfg, targets, part, threads=1)
           for part in (batches[:half], batches[:2] + batches[half:])]
    old_secs, old_sup, old_comp = (sum(x[k] for x in old) for k in range(3))
    if procs > 1:
        new_secs, new_sup, new_comp = launch_local_ranks(procs, _stage_trainer_steps, ws, str(device), steps)
    else:
        new_secs, new_sup, new_comp = _stage_trainer_steps(ws, str(device), steps)
    torch.set_num_threads(cores)
    by_library = matmul_gflops_by_library()
    peak_all = max(by_library.values())
    torch.set_num_threads(1)
    peak_one = max(matmul_gflops_by_library().values())
    new = _rates(fpf, new_secs, new_sup, new_comp, peak_all)
    old = _rates(old_fpf, old_secs, old_sup, old_comp, peak_one)
    result = {"device": str(device), "ranks": procs, "threads_per_rank": max(1, cores // procs), "cores": cores,
              "model": model_cfg.to_dict(), "old_model": old_cfg.to_dict(),
              "batch_size": cfg.batch_size, "chunk": [cfg.left_context, cfg.chunk_width, cfg.right_context],
              "steps": steps, "matmul_gflops": round(peak_all, 1), "matmul_gflops_1thread": round(peak_one, 1),
              "matmul_gflops_by_library": {k: round(v, 1) for k, v in by_library.items()},
              "flops_per_input_frame": fpf,
              "train_frames_per_s": new["train_frames_per_s"],
              "flops_per_supervised_frame": new["flops_per_supervised_frame"],
              "share_of_matmul_peak": new["share_of_matmul_peak"],
              "speedup_vs_old": round(new["train_frames_per_s"] / old["train_frames_per_s"], 2),
              "trainer": new, "old_trainer": old,
              "note": "trainer: the stage's DDP ranks, share of the matmul rate of all cores; old_trainer: the "
                      "trainer and network (old_model) before issue #17 at 1 thread, as make align then ran the "
                      "stage, share of the 1-thread matmul rate; half its steps before the ranks, half after; "
                      "the matmul rate is the faster of MKL's and oneDNN's",
              "peak_rss_mb": round(_peak_rss_mb(), 1), "peak_rss_before_training_mb": round(rss_before, 1),
              "params": sum(p.numel() for p in build_model(model_cfg, None, torch.device("cpu")).parameters())}
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def bench_hybrid_realign(ws, nj: int) -> dict:
    """Frames/s of the realignment: network forward alone, alignment alone (``nj`` workers), both."""
    from ..kaldi_io import read_model
    from ..lang import Lang

    torch.set_num_threads(1)
    d = _defaults()
    model_path = ws.exp / "hybrid" / "final.pt"
    if model_path.exists():
        model, trained = load_model(model_path, "cpu"), True
    else:
        torch.manual_seed(0)
        model = build_model(HybridConfig(num_pdfs=int(read_model(ws.exp / "tri1_ali" / "final.mdl")[0].num_pdfs),
                                         cells=d["cells"], proj=d["proj"], layers=d["layers"]),
                            None, torch.device("cpu")).eval()
        trained = False
    # the network's own input normalisation: with global CMN a speaker-CMN network's scores fail to align
    trans_model, ctx_dep, feats, targets = _load(ws, model.config.input_cmn)
    priors = np.full(trans_model.num_pdfs, 1.0 / trans_model.num_pdfs)
    prior_path = ws.exp / "hybrid" / "priors.npy"
    if prior_path.exists():
        priors = np.load(prior_path)
    log_priors = np.log(priors).astype(np.float32)
    lang = Lang.load(ws.lang)
    utts = sorted(targets)[:REALIGN_UTTS]
    frames = sum(len(targets[u][1]) for u in utts)

    cfg = _infer_config(d)
    start = time.time()
    for u in utts:   # the forward before issue #17's batching, as the baseline: one utterance per call
        model.utterance_log_probs(torch.from_numpy(targets[u][0]), cfg.chunk_width, cfg.left_context,
                                  cfg.right_context)
    one_at_a_time_s = time.time() - start
    start = time.time()
    scores = {u: ha.pseudo_log_likelihoods(lp, log_priors, d["acoustic_scale"])
              for u, lp in blocked_log_probs(model, cfg, {u: targets[u] for u in utts})}
    forward_s = time.time() - start

    graphs = TrainingGraphs(lang, trans_model, ctx_dep)
    tasks = [(u, lang.words_to_ids(feats[u][2].split()), lambda u=u: scores[u]) for u in utts]
    start = time.time()
    results = list(ha.align_utterances(tasks, compile_graph=graphs, trans_model=trans_model, nj=nj,
                                       beam=d["beam"], retry_beam=d["retry_beam"]))
    align_s = time.time() - start
    return {"utterances": len(utts), "frames": frames, "trained_model": trained, "nj": nj,
            "context": [cfg.left_context, cfg.right_context], "input_cmn": model.config.input_cmn,
            "forward_frames_per_s": round(frames / forward_s, 1),
            "forward_one_utterance_per_call_frames_per_s": round(frames / one_at_a_time_s, 1),
            "forward_speedup": round(one_at_a_time_s / forward_s, 3),
            "align_frames_per_s": round(frames / align_s, 1),
            "realign_frames_per_s": round(frames / (forward_s + align_s), 1),
            "note": "realign = forward (main process) + graph compilation and alignment (nj workers), "
                    "run one after the other here; the stage overlaps them",
            "failed": sum(r.alignment is None for r in results)}


def bench_hybrid_decode(ws, nj: int, utterances: int = DECODE_UTTS) -> dict:
    """The WER check's grid decode of the first ``utterances`` dev utterances, from archives of
    the finished hybrid's scores, in one job (this process) and in ``nj`` Dask jobs, side by side:
    wall time of each (the ``nj`` jobs' cluster start apart) and their ratio; the same paths asserted."""
    from ..execution import Executor
    from ..grid_score import ScoringGrid
    from ..mapped_decode import grid_candidates_in_jobs, write_loglike_arks
    from .stage import decoding_graph, likelihood_ratios, load_finished_pass

    torch.set_num_threads(1)
    hybrid = load_finished_pass(ws, ws.exp / "hybrid")
    graph = decoding_graph(ws, hybrid.gmm_dir) / "HCLG.fst"
    feats = load_fbank(ws, "dev", hybrid.model.config.input_cmn)
    with torch.no_grad():
        scores = likelihood_ratios(hybrid.model, hybrid.train_config, hybrid.log_priors,
                                   {u: feats[u] for u in sorted(feats)[:utterances]})
    frames = sum(len(x) for x in scores.values())
    grid = ScoringGrid()
    decodes = 1 if grid.method == "lattice" else len(grid.decode_lm_weights)
    out, timing = {}, {}
    scratch = ws.exp / "bench" / "hybrid_decode_scratch"
    for jobs in (1, nj):
        arks, order = write_loglike_arks(scores, scratch / str(jobs), jobs)
        start = time.time()
        with Executor(jobs) as executor:
            cluster_s = time.time() - start
            start = time.time()
            out[jobs] = grid_candidates_in_jobs(arks, order, graph, hybrid.trans_model, grid, executor)
            timing[jobs] = (time.time() - start, cluster_s)
    shutil.rmtree(scratch, ignore_errors=True)
    if out[1] != out[nj]:
        raise AssertionError(f"the decode in {nj} jobs found other paths than one job's")
    return {"utterances": len(scores), "frames": frames, "nj": nj, "grid": grid.as_dict(),
            "one_job_s": round(timing[1][0], 2), "nj_jobs_s": round(timing[nj][0], 2),
            "nj_cluster_start_s": round(timing[nj][1], 2),
            "speedup": round(timing[1][0] / timing[nj][0], 3),
            "one_job_frames_per_s": round(frames * decodes / timing[1][0], 1),
            "nj_jobs_frames_per_s": round(frames * decodes / timing[nj][0], 1),
            "note": "frames/s count each decode of the grid's method (one to lattices, or one per decoded "
                    "LM weight); the network's forward pass is not timed"}


BENCHMARKS = [("hybrid_train", bench_hybrid_train), ("hybrid_realign", bench_hybrid_realign),
              ("hybrid_decode", bench_hybrid_decode)]
