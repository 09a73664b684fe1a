"""Triphone GMM-HMM on Δ+ΔΔ features, as Kaldi's ``steps/train_deltas.sh``, then final alignments.

From the monophone alignments (``exp/<c>/mono/ali.N.gz``): tree statistics
(``acc-tree-stats``, silence phones context-independent), phone questions
(``cluster-phones`` on ``sets.txt`` + ``extra_questions.txt``), the tree (``build-tree``,
``max_leaves``, split threshold ``thresh``, merging with ``cluster_thresh``), one
Gaussian per leaf from the tree statistics (``gmm-init-model``) mixed up to ``num_leaves``
Gaussians (``gmm-mixup``, power 0.2), the monophone
alignments *converted* to the new tree (``convert-ali``, no realignment), graphs
compiled once, then ``num_iters`` - 1 EM iterations realigning on ``realign_iters`` and
mixing up towards ``total_gauss`` over the first ``max_iter_inc`` iterations (from
``num_leaves`` by ``(total_gauss - num_leaves) / max_iter_inc`` per iteration, as Kaldi counts).

Outputs: ``exp/<c>/tri1/`` (final.mdl, tree, final.occs, phones.txt, num_jobs, ali.N.gz of
train with the final model, diagnostics.json) and ``exp/<c>/tri1_ali/``: the final model
and tree plus the alignments of **every split of** ``align_splits`` **the corpus has** (default
train, dev and test) with the final model (``align_si.sh`` once per data dir): ``ali.1..J.gz``
are the train jobs, then each further split's jobs in the order of ``align_splits`` (dev, then
test; whole speakers per job); ``utt2split`` says each utterance's split (``<utt-id> <split>``
lines) and ``splits.json`` each split's job numbers and counts. ``read_ali_dir(exp/<c>/tri1_ali)``
returns them all.

The splits other than train are *forced-aligned* with their transcripts, after training: only
train's alignments build the tree and the model, so the model is the same whether or not dev and
test are aligned (``tests/kaldi_steps/test_tri1_options.py`` compares the bytes), and the test
alignments exist only to be exported (CTMs, TextGrids, ``cuts_test_ali``). The E2E models train
and select checkpoints on train and dev only.

Which splits were aligned is part of the stage's identity (a declared input, see
:mod:`weakalign.pipeline.options`): a workspace whose tri1 ran before ``add-split`` added the test
split, or before tri1 aligned test at all, has tri1 redone on the next request, the log naming the
change (``aligned_splits: train,dev -> train,dev,test``, or ``(not recorded) -> train,dev,test``
for the older marker); the model comes out the same, and the hybrid that then reruns resumes its
BLSTM from its checkpoints instead of training again. ``--align-splits train,dev`` keeps test out.

>>> DEFAULT_LEAVES["an4"], DEFAULT_GAUSS["an4"]
(300, 2000)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple


from weakalign.pipeline.io import atomic_open, write_json
from weakalign.pipeline.options import declares_inputs, resolves_defaults
from weakalign.pipeline.report import SkipReport

from .diag_gmm import GmmParams, split_by_count
from .gmm import (DECODE_SCALES, ProblemLog, finish_gmm_stage, pool_acc_stats, pool_align, run_em_iterations,
                  size_defaults, stage_diagnostics, write_model_dir)
from .shard import shard_args
from .execution import Executor
from .tree import (TreeStats, build_tree, cluster_phone_questions, init_gmm_from_tree_stats,
                   tree_to_context_dependency)

log = logging.getLogger("weakalign")

DEFAULT_LEAVES = {"an4": 300, "speechocean762": 1500}
DEFAULT_GAUSS = {"an4": 2000, "speechocean762": 10000}
#: ``num_leaves`` and ``total_gauss`` when not given: the two tables above.
stage_sizes = size_defaults(DEFAULT_LEAVES, DEFAULT_GAUSS)
#: ``gmm-mixup``'s default ``--power`` (``gmm-est``'s is 0.25).
GMM_MIXUP_POWER = 0.2
DEFAULT_REALIGN_ITERS = (10, 20, 30)
#: The splits ``tri1_ali`` holds when the corpus has them: train (the model's own), dev, test.
DEFAULT_ALIGN_SPLITS = ("train", "dev", "test")


def tri1_dir(ws) -> Path:
    return ws.exp / "tri1"


def tri1_ali_dir(ws) -> Path:
    return ws.exp / "tri1_ali"


def splits_to_align(ws, align_splits=DEFAULT_ALIGN_SPLITS) -> list[str]:
    """The splits ``tri1_ali`` will hold, in job order: train first (it is what the model is
    trained on, so always aligned), then each split of ``align_splits`` with MFCC features."""
    wanted = ["train"] + [s for s in align_splits if s != "train"]
    prepared = set(ws.available_splits())
    return [s for s in dict.fromkeys(wanted) if s in prepared and ws.mfcc_cuts(s).exists()]


def aligned_splits_input(ws, options: dict) -> dict:
    """tri1's declared input: which splits it aligns, so that a test split the last run did not
    align (an older default, or a split ``add-split`` added since) makes the next request redo it."""
    splits = splits_to_align(ws, options.get("align_splits") or DEFAULT_ALIGN_SPLITS)
    return {"aligned_splits": ",".join(splits)}


def write_utt2split(path: Path, utt2split: dict[str, str]) -> None:
    with atomic_open(path) as f:
        for utt in sorted(utt2split):
            f.write(f"{utt} {utt2split[utt]}\n")


def read_utt2split(ali_dir: Path) -> dict[str, str]:
    """``utt -> split`` of an alignment dir (``tri1_ali``, ``hybrid_ali``); {} when it has no ``utt2split``
    (an alignment dir made by Kaldi)."""
    path = Path(ali_dir) / "utt2split"
    if not path.exists():
        return {}
    return dict(line.split() for line in path.read_text().splitlines() if line.strip())


def align_split(ws, split: str, executor, tm, am, ctx_dep, beam: float, retry_beam: float, problems_log,
                features=None, stage: str = "tri1"):
    """Forced alignment of one split with the final model, on its transcripts (``align_si.sh``):
    returns the per-job alignments and the :class:`AlignSummary`, the split's utterance count.
    ``features``: the model's :class:`~weakalign.kaldi_steps.feature_transform.FeatureSpec`."""
    split_jobs = shard_args(ws, split, executor.nj, features)
    with executor.shards(split_jobs) as pool:
        problems_log.add_all(pool.call("get_problems"))
        problems_log.add_all(pool.call("compile_graphs", tm, ctx_dep))
        res = pool_align(pool, tm, am, beam, retry_beam)
        problems_log.add(res.failed)
        alis = pool.call("get_alignments")
    log.info("%s_ali: %s: %d aligned, %d failed", stage, split, res.aligned, len(res.failed))
    return alis, res, sum(len(a[3]) for a in split_jobs)


def write_ali_dir(ws, ali_out: Path, model, train_alignments, final, *, executor, beam: float, retry_beam: float,
                  problems_log, align_splits, features=None, stage: str = "tri1", aligner=None):
    """The ``<stage>_ali`` dir: train's alignments (made with the final model) then every other split
    of ``align_splits`` force-aligned after training, ``utt2split`` and ``splits.json`` (see the
    module docstring). ``model`` = (trans_model, am, ctx_dep, occs). ``aligner``: what aligns a split,
    with :func:`align_split`'s arguments and results (default :func:`align_split`; tri3 passes the
    fMLLR two-pass alignment). Returns (outputs, split summary)."""
    aligner = aligner or align_split
    tm, am, ctx_dep, occs = model
    all_alignments = list(train_alignments)
    utt2split = {u: "train" for a in train_alignments for u in a}
    split_summary = {"train": {"jobs": list(range(1, len(train_alignments) + 1)), **final.as_dict()}}
    for split in splits_to_align(ws, align_splits)[1:]:
        alis, res, utterances = aligner(ws, split, executor, tm, am, ctx_dep, beam, retry_beam, problems_log,
                                            features=features, stage=stage)
        first = len(all_alignments) + 1
        all_alignments.extend(alis)
        utt2split.update({u: split for a in alis for u in a})
        split_summary[split] = {"jobs": list(range(first, len(all_alignments) + 1)),
                                "utterances": utterances, **res.as_dict()}
    outputs = write_model_dir(ali_out, tm, am, ctx_dep, occs, ws.lang, all_alignments)
    write_utt2split(ali_out / "utt2split", utt2split)
    write_json(ali_out / "splits.json", split_summary)
    return outputs + [ali_out / "utt2split"], split_summary


def build_tree_from_alignments(pool, lang, mono_tm, *, num_leaves: int, thresh: float,
                               cluster_thresh: float, stage: str = "tri1"):
    """Tree statistics from the shards' current alignments (of the previous model ``mono_tm``) on
    their current features, questions, tree.

    Returns (Tree, TreeStats, questions).
    """
    stats = TreeStats.merge(pool.call("tree_stats", mono_tm, list(lang.context_indep_ids)))
    questions = cluster_phone_questions(stats, lang.sets)
    questions += [q for q in lang.extra_questions if q not in questions]
    phone2npc = list(lang.topo().get_phone_to_num_pdf_classes())
    num_pdf_classes = {p: phone2npc[p] for r in lang.roots for p in r[0]}
    tree = build_tree(stats, lang.roots, num_pdf_classes, questions, max_leaves=num_leaves,
                      thresh=thresh, cluster_thresh=cluster_thresh)
    log.info("%s: tree statistics: %d events, %.0f frames; %d questions; %d leaves",
             stage, len(stats), stats.count.sum(), len(questions), tree.num_leaves)
    return tree, stats, questions


def start_from_alignments(pool, jobs, alignments: dict, report, problems_log, missing_note: str) -> None:
    """Give the shards the previous system's ``alignments`` (their load problems logged first) and
    warn about each utterance without one (``missing_note`` says what it sits out). Not a skip: such
    an utterance is aligned from the first realignment on, and is skipped only if its final
    alignment fails too."""
    problems_log.add_all(pool.call("get_problems"))
    pool.call("set_alignments", alignments)
    for u in sorted(set(u for a in jobs for u in a[3]) - set(alignments)):
        if not report.is_skipped(u):
            report.warn(u, missing_note)


class NewTree(NamedTuple):
    """A triphone system started from the previous one's alignments (:func:`start_new_tree`)."""

    tree: object
    tree_stats: TreeStats
    questions: list
    ctx_dep: object
    trans_model: object
    am: object
    tree_occs: object


def start_new_tree(pool, lang, prev_tm, problems_log, *, num_leaves: int, thresh: float, cluster_thresh: float,
                   stage: str) -> NewTree:
    """A tree from the shards' current alignments and features, its transition model and single-Gaussian
    GMM (``gmm-init-model``), the alignments converted to it and its training graphs compiled."""
    import kaldi_hmm_gmm as khg

    tree, tree_stats, questions = build_tree_from_alignments(
        pool, lang, prev_tm, num_leaves=num_leaves, thresh=thresh, cluster_thresh=cluster_thresh, stage=stage)
    ctx_dep = tree_to_context_dependency(tree)
    tm = khg.TransitionModel(ctx_dep, lang.topo())
    am, tree_occs = init_gmm_from_tree_stats(tree, tree_stats)
    pool.call("convert_alignments", prev_tm, tm, ctx_dep)
    problems_log.add_all(pool.call("compile_graphs", tm, ctx_dep))
    return NewTree(tree, tree_stats, questions, ctx_dep, tm, am, tree_occs)


def train_tri1(ws, executor, *, num_leaves: int | None = None, total_gauss: int | None = None,
               num_iters: int = 35, max_iter_inc: int = 25, realign_iters=DEFAULT_REALIGN_ITERS,
               power: float = 0.25, beam: float = 10.0, retry_beam: float = 40.0, thresh: float = 300.0,
               cluster_thresh: float = -1.0, decode: bool = True, decode_beam: float = 13.0,
               decode_scales=DECODE_SCALES, decode_scoring: str = "kaldi-lattice",
               align_splits=DEFAULT_ALIGN_SPLITS, jobs=None) -> dict:
    """Train tri1 from ``exp/<c>/mono`` and write ``exp/<c>/{tri1,tri1_ali}`` (see module docstring).
    ``jobs``: the train jobs' ``Shard`` arguments when not the workspace's (as for
    :func:`~.train_mono.train_mono`)."""
    from .grid_score import scoring_grid
    from .kaldi_io import read_ali_dir, read_model
    from .lang import Lang
    from .train_mono import mono_dir, wer_split

    scoring_grid(decode_scoring)   # a wrong decode_scoring stops the stage now, not after its training

    sizes = stage_sizes(ws, {"num_leaves": num_leaves, "total_gauss": total_gauss})
    num_leaves, total_gauss = sizes["num_leaves"], sizes["total_gauss"]
    lang = Lang.load(ws.lang)
    report = SkipReport("tri1")
    problems_log = ProblemLog(report)
    mono_tm, _ = read_model(mono_dir(ws) / "final.mdl")
    mono_ali = read_ali_dir(mono_dir(ws))
    realign_iters = set(int(i) for i in realign_iters)
    history = []
    jobs = jobs or shard_args(ws, "train", executor.nj)
    num_utts = sum(len(a[3]) for a in jobs)
    with executor.shards(jobs) as pool:
        start_from_alignments(pool, jobs, mono_ali, report, problems_log,
                              "no monophone alignment: left out of the tree statistics")
        tree, tree_stats, questions, ctx_dep, tm, am, tree_occs = start_new_tree(
            pool, lang, mono_tm, problems_log, num_leaves=num_leaves, thresh=thresh, cluster_thresh=cluster_thresh,
            stage="tri1")
        # train_deltas.sh: ``gmm-mixup --mix-up=$numleaves`` on gmm-init-model's occupancies (the
        # requested leaves, more Gaussians than pdfs once the tree has merged some), gmm-mixup's power.
        am = split_by_count(am, tree_occs, num_leaves, power=GMM_MIXUP_POWER)

        # train_deltas.sh counts from the requested leaves, not the pdfs the tree ended with.
        num_gauss = num_leaves
        inc_gauss = max(0, (total_gauss - num_gauss) // max(max_iter_inc, 1))
        log.info("tri1: %d pdfs, %d transition-ids; target %d Gaussians (+%d per iteration)",
                 tm.num_pdfs, tm.num_transition_ids, total_gauss, inc_gauss)
        am = run_em_iterations(pool, tm, am, stage="tri1", num_iters=num_iters, realign_iters=realign_iters,
                               beams=lambda it: (beam, retry_beam), num_gauss=num_gauss, inc_gauss=inc_gauss,
                               max_iter_inc=max_iter_inc, power=power, problems_log=problems_log, history=history)

        final = pool_align(pool, tm, am, beam, retry_beam)
        problems_log.add(final.failed)
        train_alignments = pool.call("get_alignments")
        final_stats, _ = pool_acc_stats(pool, tm, am)
    occs = final_stats.pdf_occs(GmmParams.from_am(am).offsets)
    out = tri1_dir(ws)
    outputs = write_model_dir(out, tm, am, ctx_dep, occs, ws.lang, train_alignments)
    write_json(out / "tree_info.json", {**tree.info, "questions": len(questions),
                                        "tree_stats_events": len(tree_stats)})

    # tri1_ali: train (already aligned with the final model) + the other splits, after training.
    ali_outputs, split_summary = write_ali_dir(ws, tri1_ali_dir(ws), (tm, am, ctx_dep, occs), train_alignments,
                                               final, executor=executor, beam=beam, retry_beam=retry_beam,
                                               problems_log=problems_log, align_splits=align_splits)

    diagnostics = stage_diagnostics(num_utts, final, final_stats, am, history, problems_log, report,
                                    num_leaves_requested=num_leaves, tree=tree.info, splits=split_summary)
    return finish_gmm_stage(ws, out, diagnostics, report, outputs + ali_outputs,
                            decode=decode, wer_set=wer_split(ws), executor=executor, trans_model=tm, am=am,
                            decode_beam=decode_beam, decode_scales=decode_scales,
                            decode_scoring=decode_scoring)


@declares_inputs(aligned_splits_input)
@resolves_defaults(stage_sizes)
def tri1_stage(ws, nj: int = 2, cluster: str | None = None, **options) -> dict:
    """Stage function for ``run_stage("tri1", ws, tri1_stage, nj=..., ...)``: ``nj`` jobs on ``cluster``
    (as :func:`~.train_mono.mono_stage`)."""
    with Executor(nj, cluster, shared=(ws.data, ws.exp)) as executor:
        return train_tri1(ws, executor, **options)
