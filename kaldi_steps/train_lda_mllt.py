"""tri2: triphone GMM-HMM on LDA+MLLT features, as Kaldi's ``steps/train_lda_mllt.sh``.

From tri1's final alignments (``exp/<c>/tri1_ali``, train's jobs; the model that made them gives
the pdf classes and the context for the tree):

1. features: MFCC + per-speaker CMVN spliced ±3 frames (91 dims); LDA statistics with tri1's pdfs
   as classes, silence frames weighted 0 (``acc-lda``, ``weight-silence-post 0.0``), LDA to
   ``lda_dim`` = 40 (``est-lda``) -> ``lda.mat``; the features are now ``lda.mat`` x spliced;
2. a **new tree** on the LDA features from tri1's alignments (``acc-tree-stats``, questions,
   ``build-tree``, ``gmm-init-model``), tri1's alignments converted to it (``convert-ali``),
   graphs compiled once;
3. ``num_iters`` - 1 EM iterations as tri1's (realigning on ``realign_iters``, mixing up to
   ``total_gauss``), and on ``mllt_iters`` (2 4 6 12), before that iteration's statistics: MLLT
   statistics of the current model and features (silence weighted 0, ``gmm-acc-mllt``), the
   update A (``est-mllt``), the means transformed (``gmm-transform-means``) and the feature
   transform composed, A x previous (``compose-transforms``) -> ``final.mat``.

The stage is **opt-in** (not in ``weakalign align``'s default chain, see
:mod:`weakalign.pipeline.recipe`): nothing downstream reads it yet. Outputs, as tri1's:
``exp/<c>/tri2/`` (final.mdl, tree, final.occs, phones.txt, num_jobs, ali.N.gz, ``lda.mat``,
``final.mat``, ``splice_opts``, diagnostics.json with the LDA eigenvalues and each MLLT update's
objective gain) and ``exp/<c>/tri2_ali/`` (the final model, tree, ``final.mat`` and the alignments
of every split of ``align_splits`` the corpus has, ``utt2split``, ``splits.json``). Kaldi's
``--rand-prune`` subsampling of the LDA/MLLT statistics is not done (exact statistics).

>>> DEFAULT_LEAVES["an4"], DEFAULT_GAUSS["an4"]
(300, 2000)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from weakalign.pipeline.io import atomic_open, write_json
from weakalign.pipeline.options import declares_inputs, resolves_defaults
from weakalign.pipeline.report import SkipReport

from .feature_transform import DEFAULT_SPLICE_CONTEXT, FeatureSpec
from .diag_gmm import GmmParams
from .gmm import (DECODE_SCALES, ProblemLog, finish_gmm_stage, pool_acc_stats, pool_align, run_em_iterations,
                  size_defaults, stage_diagnostics, write_model_dir)
from .shard import shard_args
from .lda_mllt import (DEFAULT_LDA_DIM, DEFAULT_MLLT_ITERS, LdaStats, MlltStats, estimate_lda, estimate_mllt,
                       transform_means)
from .execution import Executor
from .train_deltas import (DEFAULT_ALIGN_SPLITS, DEFAULT_REALIGN_ITERS, aligned_splits_input,
                           start_from_alignments, start_new_tree, tri1_ali_dir, write_ali_dir)

log = logging.getLogger("weakalign")

# AN4: tri1's size, chosen on dev (dev WER 9.81% at 300 / 2000 against 11.00% at 400 / 3000; RESULTS.md).
# speechocean762 (not run yet): wsj's ratio, tri2b 2500 / 15000 beside tri1's 2000 / 10000.
DEFAULT_LEAVES = {"an4": 300, "speechocean762": 2000}
DEFAULT_GAUSS = {"an4": 2000, "speechocean762": 15000}
#: ``num_leaves`` and ``total_gauss`` when not given: the two tables above.
stage_sizes = size_defaults(DEFAULT_LEAVES, DEFAULT_GAUSS)


def tri2_dir(ws) -> Path:
    return ws.exp / "tri2"


def tri2_ali_dir(ws) -> Path:
    return ws.exp / "tri2_ali"


class FeatureTransform:
    """The current LDA(+MLLT) matrix of a training run, pushed to every shard when it changes."""

    def __init__(self, pool, lda: np.ndarray):
        self.pool = pool
        self.matrix = np.asarray(lda, dtype=np.float64)
        self._push()

    def compose(self, mllt: np.ndarray) -> None:
        """``compose-transforms``: MLLT after the current transform."""
        self.matrix = np.asarray(mllt, dtype=np.float64) @ self.matrix
        self._push()

    def _push(self) -> None:
        self.pool.call("set_feature_transform", self.matrix.astype(np.float32))


def estimate_lda_from_alignments(pool, prev_tm, silence_phones, dim: int):
    """``acc-lda`` on every shard (its current alignments of ``prev_tm``), summed, then ``est-lda``."""
    stats = LdaStats.merge(pool.call("lda_stats", prev_tm, list(silence_phones)))
    lda, frames = estimate_lda(stats, dim)
    log.info("tri2: LDA %d -> %d dims from %.0f non-silence frames of %d classes; eigenvalues kept %.2f of %.2f",
             lda.full.shape[1], dim, frames, int((stats.count > 0).sum()), lda.eigenvalues[:dim].sum(),
             lda.eigenvalues.sum())
    return lda, {**lda.info(), "frames": frames, "classes": int((stats.count > 0).sum())}


def mllt_update(pool, tm, am, transform: FeatureTransform, silence_phones, it: int):
    """One MLLT estimation (``gmm-acc-mllt`` + ``est-mllt``), applied to the means and the features.
    Returns (the transformed model, the update's info)."""
    stats = MlltStats.merge(pool.call("mllt_stats", tm, am, list(silence_phones)))
    mllt, info = estimate_mllt(stats)
    transform.compose(mllt)
    log.info("tri2 iter %d: MLLT objective gain %.4f per frame over %.0f frames", it, info["objf_impr_per_frame"],
             info["frames"])
    return transform_means(am, mllt), {"iter": it, **info, "loglike_per_frame": stats.loglike / max(stats.beta, 1)}


def write_transforms(out: Path, lda: np.ndarray, final: np.ndarray, context: int) -> list[Path]:
    """``lda.mat`` (Kaldi's ``0.mat``), ``final.mat`` and ``splice_opts``, as train_lda_mllt.sh leaves them."""
    from .kaldi_io import write_kaldi_matrix

    out.mkdir(parents=True, exist_ok=True)
    write_kaldi_matrix(out / "lda.mat", np.asarray(lda, dtype=np.float32))
    write_kaldi_matrix(out / "final.mat", np.asarray(final, dtype=np.float32))
    with atomic_open(out / "splice_opts") as f:
        f.write(f"--left-context={context} --right-context={context}\n")
    return [out / "lda.mat", out / "final.mat", out / "splice_opts"]


def train_lda_mllt(ws, executor, *, num_leaves: int | None = None, total_gauss: int | None = None,
                   num_iters: int = 35, max_iter_inc: int = 25, realign_iters=DEFAULT_REALIGN_ITERS,
                   mllt_iters=DEFAULT_MLLT_ITERS, lda_dim: int = DEFAULT_LDA_DIM,
                   splice_context: int = DEFAULT_SPLICE_CONTEXT, power: float = 0.25, beam: float = 10.0,
                   retry_beam: float = 40.0, thresh: float = 300.0, cluster_thresh: float = -1.0,
                   decode: bool = True, decode_beam: float = 13.0, decode_scales=DECODE_SCALES,
                   decode_scoring: str = "kaldi-lattice",
                   align_splits=DEFAULT_ALIGN_SPLITS) -> dict:
    """Train tri2 from ``exp/<c>/tri1_ali`` and write ``exp/<c>/{tri2,tri2_ali}`` (see module docstring)."""
    from .grid_score import scoring_grid
    from .kaldi_io import read_ali_dir, read_model
    from .lang import Lang
    from .train_mono import wer_split

    scoring_grid(decode_scoring)   # a wrong decode_scoring stops the stage now, not after its training

    sizes = stage_sizes(ws, {"num_leaves": num_leaves, "total_gauss": total_gauss})
    num_leaves, total_gauss = sizes["num_leaves"], sizes["total_gauss"]
    lang = Lang.load(ws.lang)
    silence = list(lang.silence_phone_ids)
    report = SkipReport("tri2")
    problems_log = ProblemLog(report)
    prev_tm, _ = read_model(tri1_ali_dir(ws) / "final.mdl")
    prev_ali = read_ali_dir(tri1_ali_dir(ws))
    realign_iters = set(int(i) for i in realign_iters)
    mllt_iters = set(int(i) for i in mllt_iters)
    history, mllt_history = [], []
    jobs = shard_args(ws, "train", executor.nj, FeatureSpec.lda(context=splice_context))
    num_utts = sum(len(a[3]) for a in jobs)
    with executor.shards(jobs) as pool:
        start_from_alignments(pool, jobs, prev_ali, report, problems_log,
                              "no tri1 alignment: left out of the LDA and tree statistics")
        lda, lda_info = estimate_lda_from_alignments(pool, prev_tm, silence, lda_dim)
        transform = FeatureTransform(pool, lda.matrix)
        tree, tree_stats, questions, ctx_dep, tm, am, _ = start_new_tree(
            pool, lang, prev_tm, problems_log, num_leaves=num_leaves, thresh=thresh, cluster_thresh=cluster_thresh,
            stage="tri2")

        def mllt_before_accumulate(it, am):
            if it not in mllt_iters:
                return am, {}
            am, info = mllt_update(pool, tm, am, transform, silence, it)
            mllt_history.append(info)
            return am, {"mllt_objf_impr_per_frame": info["objf_impr_per_frame"]}

        num_gauss = am.num_pdfs
        inc_gauss = max(0, (total_gauss - num_gauss) // max(max_iter_inc, 1))
        log.info("tri2: %d pdfs, %d transition-ids; target %d Gaussians (+%d per iteration); MLLT on iterations %s",
                 tm.num_pdfs, tm.num_transition_ids, total_gauss, inc_gauss, sorted(mllt_iters))
        am = run_em_iterations(pool, tm, am, stage="tri2", num_iters=num_iters, realign_iters=realign_iters,
                               beams=lambda it: (beam, retry_beam), num_gauss=num_gauss, inc_gauss=inc_gauss,
                               max_iter_inc=max_iter_inc, power=power, problems_log=problems_log, history=history,
                               before_accumulate=mllt_before_accumulate)

        final = pool_align(pool, tm, am, beam, retry_beam)
        problems_log.add(final.failed)
        train_alignments = pool.call("get_alignments")
        final_stats, _ = pool_acc_stats(pool, tm, am)
    occs = final_stats.pdf_occs(GmmParams.from_am(am).offsets)
    features = FeatureSpec.lda(transform.matrix, context=splice_context)
    out, ali_out = tri2_dir(ws), tri2_ali_dir(ws)
    outputs = write_model_dir(out, tm, am, ctx_dep, occs, ws.lang, train_alignments)
    outputs += write_transforms(out, lda.matrix, transform.matrix, splice_context)
    write_json(out / "tree_info.json", {**tree.info, "questions": len(questions),
                                        "tree_stats_events": len(tree_stats)})
    ali_outputs, split_summary = write_ali_dir(ws, ali_out, (tm, am, ctx_dep, occs), train_alignments, final,
                                               executor=executor, beam=beam, retry_beam=retry_beam, problems_log=problems_log,
                                               align_splits=align_splits, features=features, stage="tri2")
    ali_outputs += write_transforms(ali_out, lda.matrix, transform.matrix, splice_context)

    diagnostics = stage_diagnostics(num_utts, final, final_stats, am, history, problems_log, report,
                                    num_leaves_requested=num_leaves, tree=tree.info, splits=split_summary,
                                    lda=lda_info, mllt=mllt_history)
    return finish_gmm_stage(ws, out, diagnostics, report, outputs + ali_outputs, decode=decode,
                            wer_set=wer_split(ws), executor=executor, trans_model=tm, am=am, decode_beam=decode_beam,
                            decode_scales=decode_scales, features=features, decode_scoring=decode_scoring)


@declares_inputs(aligned_splits_input)
@resolves_defaults(stage_sizes)
def tri2_stage(ws, nj: int = 2, cluster: str | None = None, **options) -> dict:
    """Stage function for ``run_stage("tri2", ws, tri2_stage, nj=..., ...)``: ``nj`` jobs on ``cluster``
    (as :func:`~.train_mono.mono_stage`)."""
    with Executor(nj, cluster, shared=(ws.data, ws.exp)) as executor:
        return train_lda_mllt(ws, executor, **options)
