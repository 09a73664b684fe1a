"""Monophone GMM-HMM training, as Kaldi's ``steps/train_mono.sh`` (+ ``align_si.sh``).

Features: MFCC + per-speaker CMVN (means) + Δ+ΔΔ. Context dependency: monophone, phones
of one ``sets.txt`` line sharing pdfs (``gmm-init-mono --shared-phones``). Model: every pdf
starts as one Gaussian with the global mean/variance of the first 10 utterances (by Kaldi id, as
``gmm-init-mono`` reads ``subset-feats --n=10`` of job 1). Training graphs are compiled once
per utterance with transition/self-loop scales 0; before each alignment the current
model's transition probabilities are added (1.0 / self-loop 0.1, acoustic scale 0.1).

Schedule (Kaldi's): equal alignment, first estimate with ``--min-gaussian-occupancy=3``;
then iterations 1..num_iters-1, realigning on ``realign_iters`` (beam 6 on the first,
then beam 10; retry beam 40), each followed by re-estimation with mixing-up by
``(total_gauss - num_pdfs) / max_iter_inc`` Gaussians per iteration. At the end the train
set is aligned once more with the final model (``align_si.sh``); those alignments are
the ``ali.N.gz`` of ``exp/<c>/mono`` that the tree is built from.

Writes ``exp/<c>/mono/{final.mdl,tree,final.occs,phones.txt,num_jobs,ali.N.gz,diagnostics.json}``.

>>> DEFAULT_REALIGN_ITERS[:3]
(1, 2, 3)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from weakalign.pipeline.report import SkipReport

from .diag_gmm import init_mono_model, update_model
from .gmm import (DECODE_SCALES, ProblemLog, finish_gmm_stage, pool_acc_stats, pool_align, pool_equal_align,
                  run_em_iterations, stage_diagnostics, write_model_dir)
from .shard import shard_args
from .execution import Executor

log = logging.getLogger("weakalign")

#: ``train_mono.sh``: ``gmm-init-mono`` takes the global mean/variance from ``subset-feats --n=10``.
INIT_UTTERANCES = 10

DEFAULT_REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


def mono_dir(ws) -> Path:
    return ws.exp / "mono"


def wer_split(ws) -> str:
    """``test`` where the corpus has one, else ``dev``."""
    splits = ws.available_splits()
    return "test" if "test" in splits else "dev"


def monophone_context_dependency(lang):
    import kaldi_hmm_gmm as khg

    topo = lang.topo()
    return khg.monophone_context_dependency_shared(lang.sets, list(topo.get_phone_to_num_pdf_classes()))


def train_mono(ws, executor, *, num_iters: int = 40, total_gauss: int = 1000, max_iter_inc: int = 30,
               realign_iters=DEFAULT_REALIGN_ITERS, power: float = 0.25, beam: float = 10.0,
               initial_beam: float = 6.0, retry_beam: float = 40.0, decode: bool = True, decode_beam: float = 13.0,
               decode_scales=DECODE_SCALES, decode_scoring: str = "kaldi-lattice",
               out_dir=None, jobs=None) -> dict:
    """Train the monophone system on ``train`` and write ``exp/<c>/mono`` (see module docstring), in
    ``executor.nj`` jobs on ``executor`` (:class:`~.execution.Executor`). ``jobs``: the jobs' ``Shard``
    arguments when not the workspace's ``train`` split (e.g. :func:`~.kaldi_features.kaldi_shard_args`:
    real Kaldi's own features)."""
    import kaldi_hmm_gmm as khg

    from .grid_score import scoring_grid
    from .lang import Lang

    scoring_grid(decode_scoring)   # a wrong decode_scoring stops the stage now, not after its training

    out = Path(out_dir) if out_dir else mono_dir(ws)
    lang = Lang.load(ws.lang)
    report = SkipReport("mono")
    problems_log = ProblemLog(report)
    ctx_dep = monophone_context_dependency(lang)
    tm = khg.TransitionModel(ctx_dep, lang.topo())
    realign_iters = set(int(i) for i in realign_iters)
    history = []
    jobs = jobs or shard_args(ws, "train", executor.nj)
    num_utts = sum(len(a[3]) for a in jobs)
    with executor.shards(jobs) as pool:
        problems_log.add_all(pool.call("get_problems"))
        problems_log.add_all(pool.call("compile_graphs", tm, ctx_dep))

        subset = init_subset(pool.call("get_kaldi_ids"), INIT_UTTERANCES)
        count, s, s2 = (np.sum(x, axis=0) for x in zip(*pool.call("feature_stats", subset)))
        mean = s / count
        am = init_mono_model(mean, s2 / count - mean * mean, tm.num_pdfs)
        num_gauss = am.num_gauss
        inc_gauss = max(0, (total_gauss - num_gauss) // max(max_iter_inc, 1))
        log.info("mono: %d pdfs, %d transition-ids; target %d Gaussians (+%d per iteration)",
                 tm.num_pdfs, tm.num_transition_ids, total_gauss, inc_gauss)

        ali = pool_equal_align(pool)
        problems_log.add(ali.failed, transient=True)
        stats, counts = pool_acc_stats(pool, tm, am)
        am, info = update_model(tm, am, stats, counts, mixup=num_gauss, power=power, min_gaussian_occupancy=3.0)
        log.info("mono iter 0 (equal alignment: %d aligned, %d failed): avg loglike/frame %.4f, %d Gaussians",
                 ali.aligned, len(ali.failed), stats.loglike / max(stats.frames, 1), am.num_gauss)
        history.append({"iter": 0, "avg_loglike_per_frame": stats.loglike / max(stats.frames, 1),
                        "num_gauss": am.num_gauss, "trans_objf_impr_per_frame": info["trans_objf_impr_per_frame"]})
        # train_mono.sh: the first realignment uses a narrow beam (the model is still crude), with the
        # usual retry beam (its log: --beam=6 --retry-beam=40).
        def beams(it):
            return (initial_beam, retry_beam) if it == 1 else (beam, retry_beam)

        am = run_em_iterations(pool, tm, am, stage="mono", num_iters=num_iters, realign_iters=realign_iters,
                               beams=beams, num_gauss=num_gauss, inc_gauss=inc_gauss, max_iter_inc=max_iter_inc,
                               power=power, problems_log=problems_log, history=history)

        # align_si.sh: final alignments with the final model.
        final = pool_align(pool, tm, am, beam, retry_beam)
        problems_log.add(final.failed)
        alignments = pool.call("get_alignments")
        final_stats, _ = pool_acc_stats(pool, tm, am)
    occs = final_stats.pdf_occs(_offsets(am))
    outputs = write_model_dir(out, tm, am, ctx_dep, occs, ws.lang, alignments)
    diagnostics = stage_diagnostics(num_utts, final, final_stats, am, history, problems_log, report)
    return finish_gmm_stage(ws, out, diagnostics, report, outputs, decode=decode, wer_set=wer_split(ws),
                            executor=executor, trans_model=tm, am=am, decode_beam=decode_beam,
                            decode_scales=decode_scales, decode_scoring=decode_scoring)


def init_subset(kaldi_ids: list[dict[str, str]], n: int = INIT_UTTERANCES) -> list[str]:
    """The utterances ``gmm-init-mono`` reads: ``subset-feats --n=10`` keeps the first ``n`` of job 1,
    which in Kaldi's split (speaker-contiguous chunks of the sorted ids) are the first ``n``
    utterances by Kaldi id. ``kaldi_ids``: each job's ``utt -> Kaldi id``.

    >>> init_subset([{"b": "s2-b"}, {"a": "s1-a", "c": "s1-c"}], 2)
    ['a', 'c']
    """
    merged = {u: k for job in kaldi_ids for u, k in job.items()}
    return sorted(merged, key=lambda u: merged[u])[:n]


def _offsets(am):
    from .diag_gmm import GmmParams

    return GmmParams.from_am(am).offsets


def mono_stage(ws, nj: int = 2, cluster: str | None = None, **options) -> dict:
    """Stage function for ``run_stage("mono", ws, mono_stage, nj=..., ...)``: ``nj`` jobs on ``cluster``
    (a Dask scheduler's address; None: a local cluster of ``nj`` processes, see :mod:`.execution`)."""
    with Executor(nj, cluster, shared=(ws.data, ws.exp)) as executor:
        return train_mono(ws, executor, **options)
