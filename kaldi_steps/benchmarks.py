"""Benchmarks of the GMM-HMM stages (``weakalign bench``): alignment speed and its Python overhead.

``gmm_align``: Viterbi alignment of (up to) 300 train utterances with the trained tri1 model
(mono if tri1 is absent) through our :class:`~weakalign.kaldi_steps.gmm.Shard` (what the
stages run), against a bare loop over khg calls on the same graphs and model — graph copy,
``add_transition_probs``, ``DecodableAmDiagGmmScaled``, ``align_utterance_wrapper`` — and
``overhead_ratio`` = bare frames/s / our frames/s (goal ≤ 1.1). Also the vectorised GMM
statistics accumulation (frames/s) and the alignment frames/s of ``nj`` jobs on a local Dask cluster
(:mod:`~weakalign.kaldi_steps.execution`; keys ``pool_*``).

``gmm_align_dask``: the cost of the execution layer itself (issue #15). The stage's own 2 shards
of train (every utterance, graphs compiled first: one ``align`` call of a training iteration)
aligned by a plain loop over ``Shard`` objects in this process, by the same shards as Dask actors
on a local cluster of 1 worker (``dask_overhead_ratio`` = Dask time / loop time, goal ≤ 1.05;
``dask_call_overhead_ms``: a call's time outside its jobs' own work on the worker, i.e. what a
call costs whatever its size -- the model pickled, sent and unpickled, the round trips), and on 2 workers (``scaling_1_to_2_workers`` =
1-worker time / 2-worker time; 2 at best). Best of 3 each; the alignments must be the same in
the three.

``wer_check``: the cost of the GMM stages' HCLG WER check with the trained model, side by side
in one process (``nj`` jobs): one plain decode of dev and of the WER set at acoustic scale 0.1
(the least a check can do), the old search (``scoring="scales"``: six dev decodes + one), and
Kaldi's ``score.sh`` grid (``scoring="kaldi-grid"``, :mod:`~weakalign.kaldi_steps.grid_score`);
``*_vs_single_decode`` are the ratios (issue #17's goal: <= 1.3), with both checks' WERs.
"""

from __future__ import annotations

import time

MAX_UTTS = 300


def _model_dir(ws):
    for name in ("tri1", "mono"):
        if (ws.exp / name / "final.mdl").exists():
            return ws.exp / name
    raise FileNotFoundError(f"no GMM model under {ws.exp}/{{tri1,mono}}: run `weakalign tri1 {ws.corpus}` first")


def bare_align_loop(graphs: dict, feats: dict, tm, am, beam: float = 10.0, retry_beam: float = 40.0,
                    acoustic_scale: float = 0.1) -> int:
    """The khg calls alone, as ``gmm-align-compiled`` does them; returns frames aligned."""
    import kaldi_hmm_gmm as khg
    import kaldifst

    config = khg.AlignConfig(beam=beam, retry_beam=retry_beam)
    frames = 0
    for utt, graph in graphs.items():
        fst = kaldifst.StdVectorFst(graph)
        khg.add_transition_probs(tm, [], 1.0, 0.1, fst)
        dec = khg.DecodableAmDiagGmmScaled(am, tm, feats[utt], acoustic_scale)
        out = khg.align_utterance_wrapper(config, utt, acoustic_scale, fst, dec, 0, 0, 0, 0.0, 0)
        frames += len(out[5])
    return frames


def bench_gmm_align(ws, nj: int) -> dict:
    import numpy as np

    from .execution import Executor
    from .gmm import GmmParams, Shard, accumulate_gmm_stats, shard_args
    from .kaldi_io import read_model, read_tree

    model_dir = _model_dir(ws)
    tm, am = read_model(model_dir / "final.mdl")
    ctx = read_tree(model_dir / "tree")
    args = shard_args(ws, "train", 1)[0]
    utts = args[3][:MAX_UTTS]
    shard = Shard(args[0], args[1], args[2], utts)
    shard.compile_graphs(tm, ctx)

    def best_of(fn, repeats=3):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    ours_s, res = best_of(lambda: shard.align(tm, am, 10.0, 40.0))
    frames = sum(len(a) for a in shard.alignments.values())
    bare_s, bare_frames = best_of(lambda: bare_align_loop(shard.graphs, shard.feats, tm, am))

    ali = np.concatenate([shard.alignments[u] for u in shard.utt_ids if u in shard.alignments])
    feats = np.concatenate([shard.feats[u] for u in shard.utt_ids if u in shard.alignments])
    pdfs = np.asarray(tm.id2pdf_id, dtype=np.int64)[ali]
    params = GmmParams.from_am(am)
    acc_s, _ = best_of(lambda: accumulate_gmm_stats(params, feats, pdfs))

    with Executor(nj) as executor, executor.shards(shard_args(ws, "train", nj)) as pool:
        pool.call("compile_graphs", tm, ctx)
        start = time.perf_counter()
        summary = pool.call("align", tm, am, 10.0, 40.0)
        pool_s = time.perf_counter() - start
    pool_frames = sum(r["frames"] for r in summary)
    return {
        "model": str(model_dir),
        "num_pdfs": am.num_pdfs,
        "num_gauss": am.num_gauss,
        "utterances": len(utts),
        "frames": frames,
        "stage_align_frames_per_s": round(frames / ours_s),
        "bare_khg_align_frames_per_s": round(bare_frames / bare_s),
        "overhead_ratio": round((bare_frames / bare_s) / (frames / ours_s), 3),
        "acc_stats_frames_per_s": round(len(pdfs) / acc_s),
        "pool_nj": nj,
        "pool_align_frames_per_s": round(pool_frames / pool_s),
        "pool_frames": pool_frames,
    }


def _time_align(jobs, tm, am, repeats: int = 3) -> tuple[float, float, list]:
    """Best-of-``repeats`` wall time of one ``align`` call over every job, the least time of a call
    outside its jobs' own work (wall time minus the jobs' summed ``seconds``: on one worker the jobs
    run one after the other), and the results."""
    best, outside, results = float("inf"), float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        results = jobs.call("align", tm, am, 10.0, 40.0)
        wall = time.perf_counter() - start
        best, outside = min(best, wall), min(outside, wall - sum(r["seconds"] for r in results))
    return best, outside, results


def bench_gmm_align_dask(ws, nj: int) -> dict:
    from .execution import ActorJobs, InProcessJobs, _connect, _import_shard_modules, _start_local_cluster
    from .gmm import shard_args
    from .kaldi_io import read_model, read_tree

    model_dir = _model_dir(ws)
    tm, am = read_model(model_dir / "final.mdl")
    ctx = read_tree(model_dir / "tree")
    shards = shard_args(ws, "train", 2)

    def timed(jobs) -> tuple[float, float, list]:
        """The best align time, the least time outside the jobs' work, and the alignments of every
        job as one flat (utt, array) list."""
        jobs.call("compile_graphs", tm, ctx)
        seconds, outside, _ = _time_align(jobs, tm, am)
        alignments = [(utt, ali.tobytes()) for job in jobs.call("get_alignments") for utt, ali in job.items()]
        return seconds, outside, alignments

    with InProcessJobs(shards) as jobs:
        loop_s, _, reference = timed(jobs)
    frames = sum(len(ali) for _, ali in reference) // 4  # int32
    _import_shard_modules()
    dask_s, outside_s = {}, {}
    for workers in (1, 2):
        with _start_local_cluster(workers) as cluster, _connect(cluster) as client, ActorJobs(client, shards) as jobs:
            dask_s[workers], outside_s[workers], results = timed(jobs)
        if results != reference:
            raise AssertionError(f"the alignments on {workers} Dask worker(s) differ from the loop's")
    return {
        "model": str(model_dir),
        "shards": len(shards),
        "utterances": sum(len(args[3]) for args in shards),
        "frames": frames,
        "loop_align_s": round(loop_s, 4),
        "dask_1_worker_align_s": round(dask_s[1], 4),
        "dask_2_workers_align_s": round(dask_s[2], 4),
        "dask_overhead_ratio": round(dask_s[1] / loop_s, 3),
        "dask_call_overhead_ms": round(1000 * outside_s[1], 1),
        "scaling_1_to_2_workers": round(dask_s[1] / dask_s[2], 3),
        "same_alignments": True,
    }


def bench_wer_check(ws, nj: int) -> dict:
    from .execution import Executor
    from .gmm import decode_wer, shard_args
    from .graph import compute_wer, make_graph
    from .kaldi_io import read_model
    from .train_mono import wer_split

    model_dir = _model_dir(ws)
    tm, am = read_model(model_dir / "final.mdl")
    hclg, words, wer_set = model_dir / "graph" / "HCLG.fst", model_dir / "graph" / "words.txt", wer_split(ws)
    out = {"model": str(model_dir), "wer_set": wer_set, "nj": nj}
    with Executor(nj) as executor:
        make_graph(ws.lang, model_dir, model_dir / "graph")
        start = time.perf_counter()
        for split in ("dev", wer_set):
            with executor.shards(shard_args(ws, split, executor.nj)) as pool:
                refs, hyps = {}, {}
                for r in pool.call("references"):
                    refs.update(r)
                for h in pool.call("decode", str(hclg), tm, am, str(words), 0.1):
                    hyps.update(h)
            out[f"single_decode_{split}_wer"] = compute_wer(refs, hyps)["wer"]
        out["single_decode_s"] = round(time.perf_counter() - start, 2)
        for scoring in ("scales", "kaldi-grid"):
            start = time.perf_counter()
            result = decode_wer(ws, model_dir, wer_set, executor, tm, am, scoring=scoring)
            out[f"{scoring}_check_s"] = round(time.perf_counter() - start, 2)
            out[f"{scoring}_vs_single_decode"] = round(out[f"{scoring}_check_s"] / out["single_decode_s"], 2)
            out[f"{scoring}_wer"] = result["wer"]
            out[f"{scoring}_point"] = {k: result[k] for k in ("acoustic_scale", "lm_weight", "penalty") if k in result}
    return out


BENCHMARKS = [("gmm_align", bench_gmm_align), ("gmm_align_dask", bench_gmm_align_dask),
              ("wer_check", bench_wer_check)]
