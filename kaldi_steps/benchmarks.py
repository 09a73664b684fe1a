"""Benchmarks of the GMM-HMM stages (``weakalign bench``): alignment speed and its Python overhead.

``gmm_align``: Viterbi alignment of (up to) 300 train utterances with the trained tri1 model
(mono if tri1 is absent) through our :class:`~weakalign.kaldi_steps.shard.Shard` (what the
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
call costs whatever its size -- the model pickled, sent and unpickled, the round trips), and on
2 workers (``scaling_1_to_2_workers`` = 1-worker time / 2-worker time; 2 at best). Best of 3
each; the alignments must be the same in the three.

``gmm_systems``: the alignment speed of every GMM system trained in the workspace (mono, tri1,
tri2 = LDA+MLLT, tri3 = SAT; issue #16), on the same ``MAX_UTTS`` train utterances in this
process, each on its own features (Δ+ΔΔ; spliced × ``final.mat``; and those with each speaker's
fMLLR) and tree: ``align_frames_per_s`` of a Viterbi pass with the final model (best of 3), for
tri3 also ``align_fmllr_frames_per_s``, the whole of ``align_fmllr.sh`` (speaker-independent pass
with ``final.alimdl``, one fMLLR estimate per speaker, the final pass); and each stage's recorded
wall time (its done-marker). A system not trained is listed in ``absent``.

``wer_check``: the cost of the GMM stages' HCLG WER check with the trained model, side by side
in one process (``nj`` jobs): one plain decode of dev and of the WER set at acoustic scale 0.1
(the least a check can do), the old search (``scoring="scales"``: six dev decodes + one), and
Kaldi's ``score.sh`` grid scored on the paths of six dev decodes (``"kaldi-nbest"``) and on dev's
lattices of one decode (``"kaldi-lattice"``, the stages' check; :mod:`~weakalign.kaldi_steps.grid_score`);
``*_vs_single_decode`` are the ratios (issue #17's goal: <= 1.3), with every check's WER.
"""

from __future__ import annotations

import time

MAX_UTTS = 300


def _model_dir(ws):
    for name in ("tri1", "mono"):
        if (ws.exp / name / "final.mdl").exists():
            return ws.exp / name
    raise FileNotFoundError(f"no GMM model under {ws.exp}/{{tri1,mono}}: run `weakalign tri1 {ws.corpus}` first")


def _best_of(fn, repeats: int = 3) -> tuple[float, object]:
    """The least wall time of ``repeats`` calls of ``fn``, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


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

    from .diag_gmm import GmmParams, accumulate_gmm_stats
    from .execution import Executor
    from .kaldi_io import read_model, read_tree
    from .shard import Shard, shard_args

    model_dir = _model_dir(ws)
    tm, am = read_model(model_dir / "final.mdl")
    ctx = read_tree(model_dir / "tree")
    args = shard_args(ws, "train", 1)[0]
    utts = args[3][:MAX_UTTS]
    shard = Shard(args[0], args[1], args[2], utts)
    shard.compile_graphs(tm, ctx)

    ours_s, res = _best_of(lambda: shard.align(tm, am, 10.0, 40.0))
    frames = res["frames"]
    bare_s, bare_frames = _best_of(lambda: bare_align_loop(shard.graphs, shard.feats, tm, am))

    ali = np.concatenate([shard.alignments[u] for u in shard.utt_ids if u in shard.alignments])
    feats = np.concatenate([shard.feats[u] for u in shard.utt_ids if u in shard.alignments])
    pdfs = np.asarray(tm.id2pdf_id, dtype=np.int64)[ali]
    params = GmmParams.from_am(am)
    acc_s, _ = _best_of(lambda: accumulate_gmm_stats(params, feats, pdfs))

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
    from .kaldi_io import read_model, read_tree
    from .shard import shard_args

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
    from .gmm import decode_wer
    from .graph import compute_wer, make_graph
    from .kaldi_io import read_model
    from .shard import shard_args
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
        for scoring in ("scales", "kaldi-nbest", "kaldi-lattice"):
            start = time.perf_counter()
            result = decode_wer(ws, model_dir, wer_set, executor, tm, am, scoring=scoring)
            out[f"{scoring}_check_s"] = round(time.perf_counter() - start, 2)
            out[f"{scoring}_vs_single_decode"] = round(out[f"{scoring}_check_s"] / out["single_decode_s"], 2)
            out[f"{scoring}_wer"] = result["wer"]
            out[f"{scoring}_point"] = {k: result[k] for k in ("acoustic_scale", "lm_weight", "penalty") if k in result}
    return out


#: The GMM systems ``gmm_systems`` looks for, in training order.
GMM_SYSTEMS = ("mono", "tri1", "tri2", "tri3")


def _system_shard(ws, system_dir, utts):
    """A Shard of ``utts`` on the features ``system_dir``'s model was trained on."""
    from .shard import Shard, shard_args
    from .train_sat import si_features

    features = si_features(system_dir) if (system_dir / "final.mat").exists() else None
    args = shard_args(ws, "train", 1, features)[0]
    return Shard(args[0], args[1], args[2], utts, features)


def _align_fmllr(shard, tm, alimdl, am, silence_phones) -> dict:
    """``align_fmllr.sh`` on one shard: SI pass, fMLLR per speaker from it, the final pass."""
    shard.use_si_features()
    shard.align(tm, alimdl, 10.0, 40.0)
    shard.update_fmllr(tm, am, silence_phones, 0.0)
    return shard.align(tm, am, 10.0, 40.0)


def bench_gmm_systems(ws, nj: int) -> dict:
    from weakalign.pipeline.benchmarks import recorded_stage_times

    from .kaldi_io import read_model, read_tree
    from .shard import shard_args

    present = [s for s in GMM_SYSTEMS if (ws.exp / s / "final.mdl").exists()]
    if not present:
        raise FileNotFoundError(f"no GMM model under {ws.exp}/{{{','.join(GMM_SYSTEMS)}}}: "
                                f"run `weakalign align {ws.corpus}` first")
    utts = shard_args(ws, "train", 1)[0][3][:MAX_UTTS]
    stage_seconds = recorded_stage_times(ws.exp_root).get(ws.corpus, {})
    systems = {}
    for name in present:
        system_dir = ws.exp / name
        tm, am = read_model(system_dir / "final.mdl")
        shard = _system_shard(ws, system_dir, utts)
        shard.compile_graphs(tm, read_tree(system_dir / "tree"))
        out = {"num_pdfs": am.num_pdfs, "num_gauss": am.num_gauss, "feature_dim": am.dim,
               "stage_seconds": stage_seconds.get(name)}
        if name == "tri3":
            _, alimdl = read_model(system_dir / "final.alimdl")
            silence = list(shard.lang.silence_phone_ids)
            seconds, aligned = _best_of(lambda: _align_fmllr(shard, tm, alimdl, am, silence))
            out["align_fmllr_frames_per_s"] = round(aligned["frames"] / seconds)
        seconds, aligned = _best_of(lambda: shard.align(tm, am, 10.0, 40.0))
        out.update(frames=aligned["frames"], aligned=aligned["aligned"],
                   align_frames_per_s=round(aligned["frames"] / seconds))
        systems[name] = out
    return {"utterances": len(utts), "systems": systems, "absent": [s for s in GMM_SYSTEMS if s not in present]}


BENCHMARKS = [("gmm_align", bench_gmm_align), ("gmm_align_dask", bench_gmm_align_dask),
              ("gmm_systems", bench_gmm_systems), ("wer_check", bench_wer_check)]
