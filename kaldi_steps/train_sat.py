"""tri3: speaker-adapted training (SAT) with fMLLR, as Kaldi's ``steps/train_sat.sh``,
``steps/align_fmllr.sh`` and ``steps/decode_fmllr.sh``.

From tri2's final alignments (``exp/<c>/tri2_ali``: its model, tree and ``final.mat``), on tri2's
speaker-independent (SI) features, spliced MFCC x ``final.mat`` (LDA+MLLT, 40 dims):

1. a first fMLLR per speaker (:mod:`~weakalign.kaldi_steps.fmllr`, ``gmm-est-fmllr``) with tri2's model
   and alignments, silence frames weighted ``silence_weight`` (0); the features are now each speaker's
   fMLLR x SI features;
2. a **new tree** on the adapted features from tri2's alignments, one Gaussian per leaf, tri2's
   alignments converted to it, graphs compiled once (as tri1/tri2);
3. ``num_iters`` - 1 EM iterations as tri2's (realign on ``realign_iters``, mix up to ``total_gauss``),
   with, on ``fmllr_iters`` (2 4 6 12) before that iteration's statistics, a new fMLLR per speaker
   estimated with the current model on the current (adapted) features and composed after the
   speaker's transform (``compose-transforms --b-is-affine=true``): ``trans.JOB``;
4. ``final.alimdl``, the SI model that goes with it: Gaussian posteriors from the final model on the
   adapted features, statistics of the SI features (``gmm-acc-stats-twofeats``), means, variances and
   weights re-estimated, no Gaussian removed (``gmm-est --remove-low-count-gaussians=false``).

Outputs: ``exp/<c>/tri3/`` (final.mdl, final.alimdl, tree, final.occs, phones.txt, num_jobs, ali.N.gz,
``trans.N`` -- one binary Kaldi archive of speaker -> 40 x 41 fMLLR matrix per job --, ``final.mat``
and ``splice_opts`` of tri2, diagnostics.json with every fMLLR pass's objective gain) and
``exp/<c>/tri3_ali/``: the other splits of ``align_splits`` aligned as ``align_fmllr.sh`` does (SI pass
with ``final.alimdl``, fMLLR per speaker with ``final.mdl`` from it, realignment on the adapted
features), train's jobs then each split's, with their ``trans.N`` beside ``ali.N.gz``.

The WER check is ``decode_fmllr.sh``'s two passes (:func:`decode_fmllr_wer`): SI decoding with
``final.alimdl`` at acoustic scale 1/12, fMLLR per speaker from the best paths (silence weighted 0.01),
a second decoding with ``final.mdl`` on the adapted features and fMLLR re-estimated from it (composed),
then the final decoding, scored as the other GMM stages' checks (Kaldi's ``score.sh`` grid on dev,
:mod:`.grid_score`; each split is adapted with its own passes). Differences from Kaldi: best paths
instead of lattice posteriors, and the first fMLLR's Gaussian posteriors come from ``final.mdl`` on
the SI features (Kaldi takes them from ``final.alimdl``, ``gmm-post-to-gpost``).

The stage is **opt-in** like tri2 (``weakalign align --stop-after tri3`` runs tri2 first).

>>> DEFAULT_LEAVES["an4"], DEFAULT_GAUSS["an4"]
(300, 2000)
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from weakalign.pipeline.io import atomic_path, write_json
from weakalign.pipeline.options import declares_inputs, resolves_defaults
from weakalign.pipeline.report import SkipReport

from .execution import Executor
from .feature_transform import DEFAULT_SPLICE_CONTEXT, FeatureSpec
from .fmllr import DEFAULT_FMLLR_ITERS, write_trans_archive
from .diag_gmm import GmmParams, GmmStats, gmm_from_arrays
from .gmm import (DECODE_SCALES, ProblemLog, finish_gmm_stage, pool_acc_stats, pool_align, run_em_iterations,
                  size_defaults, stage_diagnostics, write_model_dir)
from .shard import shard_args
from .train_deltas import (DEFAULT_ALIGN_SPLITS, DEFAULT_REALIGN_ITERS, aligned_splits_input,
                           start_from_alignments, start_new_tree, write_ali_dir)
from .train_lda_mllt import tri2_ali_dir

log = logging.getLogger("weakalign")

# AN4: tri2's size (not tuned for tri3). speechocean762 (not run yet): wsj's tri3b 4200 / 40000 is
# for 80 h; its tri2's 2000 / 15000 here.
DEFAULT_LEAVES = {"an4": 300, "speechocean762": 2000}
DEFAULT_GAUSS = {"an4": 2000, "speechocean762": 15000}
#: ``num_leaves`` and ``total_gauss`` when not given: the two tables above.
stage_sizes = size_defaults(DEFAULT_LEAVES, DEFAULT_GAUSS)
#: ``train_sat.sh`` / ``align_fmllr.sh``: silence frames do not count in the fMLLR statistics.
TRAIN_SILENCE_WEIGHT = 0.0
#: ``decode_fmllr.sh``: silence weight of the fMLLR statistics and the acoustic scale of its adaptation passes.
DECODE_SILENCE_WEIGHT = 0.01
DECODE_ADAPT_SCALE = 0.083333


def tri3_dir(ws) -> Path:
    return ws.exp / "tri3"


def tri3_ali_dir(ws) -> Path:
    return ws.exp / "tri3_ali"


def si_features(ali_dir: Path) -> FeatureSpec:
    """The SI features of an LDA+MLLT system's dir: spliced as its ``splice_opts`` say, x ``final.mat``."""
    from .kaldi_io import read_kaldi_matrix

    context = DEFAULT_SPLICE_CONTEXT
    opts = Path(ali_dir) / "splice_opts"
    if opts.exists():
        for opt in opts.read_text().split():
            if opt.startswith("--left-context="):
                context = int(opt.split("=", 1)[1])
    return FeatureSpec.lda(read_kaldi_matrix(Path(ali_dir) / "final.mat"), context=context)


def fmllr_pass(pool, tm, am, silence_phones, silence_weight: float, it: int, stage: str = "tri3") -> dict:
    """One fMLLR estimation for every speaker of the jobs (:meth:`~.shard.Shard.update_fmllr`), the
    features adapted; returns the pass's summary (speakers, updated, frames, objective gain)."""
    infos = {spk: info for part in pool.call("update_fmllr", tm, am, list(silence_phones), silence_weight)
             for spk, info in part.items()}
    frames = sum(i["frames"] for i in infos.values())
    gain = sum(i["objf_impr"] for i in infos.values())
    kept = Counter(i["reason"] for i in infos.values() if not i["updated"])
    summary = {"iter": it, "speakers": len(infos), "updated": sum(i["updated"] for i in infos.values()),
               "not_updated": dict(sorted(kept.items())),
               "frames": frames, "objf_impr": gain, "objf_impr_per_frame": gain / max(frames, 1.0),
               "min_speaker_objf_impr": min((i["objf_impr"] for i in infos.values()), default=0.0)}
    kept_said = f" (kept: {', '.join(f'{n} {why}' for why, n in sorted(kept.items()))})" if kept else ""
    log.info("%s fMLLR (iter %d): %d of %d speakers updated%s; objective gain %.4f per frame over %.0f frames",
             stage, it, summary["updated"], summary["speakers"], kept_said, summary["objf_impr_per_frame"], frames)
    return summary


def estimate_alimdl(am, stats: GmmStats, *, min_gaussian_occupancy: float = 10.0, min_variance: float = 0.001):
    """``final.alimdl`` from two-feature statistics (posteriors of ``am`` on the adapted features,
    statistics of the SI ones): each Gaussian's mean and variance re-estimated where it has at least
    ``min_gaussian_occupancy`` frames (kept otherwise), weights from the occupancies, none removed."""
    import kaldi_hmm_gmm as khg

    offsets = GmmParams.from_am(am).offsets
    out = khg.AmDiagGmm()
    for j in range(am.num_pdfs):
        gmm = am.get_pdf(j)
        lo, hi = offsets[j], offsets[j + 1]
        occ, x, x2 = stats.occ[lo:hi], stats.x[lo:hi], stats.x2[lo:hi]
        iv = np.asarray(gmm.inv_vars, dtype=np.float64)
        mean = np.asarray(gmm.means_invvars, dtype=np.float64) / iv
        var = 1.0 / iv
        weights = np.asarray(gmm.weights, dtype=np.float64)
        ok = occ >= min_gaussian_occupancy
        if ok.any():
            mean[ok] = x[ok] / occ[ok, None]
            var[ok] = np.maximum(x2[ok] / occ[ok, None] - mean[ok] ** 2, min_variance)
        if occ.sum() > 0:
            weights = np.maximum(occ / occ.sum(), 1e-5)
            weights /= weights.sum()
        out.add_pdf(gmm_from_arrays(weights, mean, var))
    return out


def sum_stats(parts) -> tuple[GmmStats, np.ndarray]:
    stats, counts = parts[0]
    for s, c in parts[1:]:
        stats.add(s)
        counts = counts + c
    return stats, counts


def write_sat_files(out: Path, src: Path, transforms: list[dict], alimdl=None, trans_model=None) -> list[Path]:
    """``trans.1..J`` (one archive per job, in job order), tri2's ``final.mat`` and ``splice_opts``, and
    ``final.alimdl`` when given. Stale ``trans.N`` of an earlier run with more jobs are removed."""
    from .kaldi_io import write_model

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("trans.*"):
        old.unlink()
    written = []
    for j, job_transforms in enumerate(transforms, start=1):
        write_trans_archive(out / f"trans.{j}", job_transforms)
        written.append(out / f"trans.{j}")
    for name in ("final.mat", "splice_opts"):
        if (Path(src) / name).exists():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(Path(src) / name, tmp)
            written.append(out / name)
    if alimdl is not None:
        write_model(out / "final.alimdl", trans_model, alimdl)
        written.append(out / "final.alimdl")
    return written


def fmllr_aligner(alimdl, silence_phones, transforms_out: list):
    """A split's alignment as ``align_fmllr.sh`` (for :func:`~.train_deltas.write_ali_dir`): SI pass with
    ``alimdl``, fMLLR per speaker with the final model from it, realignment on the adapted features.
    Each job's transforms are appended to ``transforms_out``."""

    def align(ws, split, executor, tm, am, ctx_dep, beam, retry_beam, problems_log, features=None,
              stage="tri3"):
        split_jobs = shard_args(ws, split, executor.nj, features)
        with executor.shards(split_jobs) as pool:
            problems_log.add_all(pool.call("get_problems"))
            problems_log.add_all(pool.call("compile_graphs", tm, ctx_dep))
            first = pool_align(pool, tm, alimdl, beam, retry_beam)
            problems_log.add(first.failed, transient=True)
            fmllr = fmllr_pass(pool, tm, am, silence_phones, TRAIN_SILENCE_WEIGHT, 0, stage=f"{stage}_ali {split}")
            res = pool_align(pool, tm, am, beam, retry_beam)
            problems_log.add(res.failed)
            alis = pool.call("get_alignments")
            transforms_out.extend(pool.call("get_speaker_transforms"))
        log.info("%s_ali: %s: %d aligned, %d failed (SI pass: %d failed; fMLLR gain %.4f per frame)", stage, split,
                 res.aligned, len(res.failed), len(first.failed), fmllr["objf_impr_per_frame"])
        return alis, res, sum(len(a[3]) for a in split_jobs)

    return align


# ---------------------------------------------------------------------------------------------
# decode_fmllr.sh


def _merge(parts: list[dict]) -> dict:
    out = {}
    for p in parts:
        out.update(p)
    return out


def _adapt_for_decoding(pool, split, refs, hclg, words, tm, am, alimdl, silence_phones, beam) -> dict:
    """decode_fmllr.sh's two adaptation passes on the jobs of ``split``, which keep the adapted
    features: returns the passes' info (SI and second-pass WER, the fMLLR summaries)."""
    from .graph import compute_wer

    # Pass 1: speaker-independent, final.alimdl on the SI features; its best paths kept.
    hyps = _merge(pool.call("decode", str(hclg), tm, alimdl, str(words), DECODE_ADAPT_SCALE,
                            keep_best_paths=True, beam=beam))
    si = compute_wer(refs, hyps)
    first = fmllr_pass(pool, tm, am, silence_phones, DECODE_SILENCE_WEIGHT, 1, stage=f"decode_fmllr {split}")
    # Pass 2: final.mdl on the adapted features; fMLLR re-estimated from its best paths, composed.
    hyps = _merge(pool.call("decode", str(hclg), tm, am, str(words), DECODE_ADAPT_SCALE,
                            keep_best_paths=True, beam=beam))
    second_wer = compute_wer(refs, hyps)
    second = fmllr_pass(pool, tm, am, silence_phones, DECODE_SILENCE_WEIGHT, 2, stage=f"decode_fmllr {split}")
    return {"si_wer": si["wer"], "pass2_wer": second_wer["wer"], "adapt_scale": DECODE_ADAPT_SCALE,
            "fmllr": [first, second]}


def _decode_split_fmllr(ws, split, executor, hclg, words, tm, am, alimdl, silence_phones, beam, features,
                        final_pass) -> tuple[dict, object]:
    """decode_fmllr.sh on one split: the two adaptation passes, then ``final_pass(pool, refs)`` on
    the adapted jobs. Returns (the passes' info, what ``final_pass`` returned)."""
    with executor.shards(shard_args(ws, split, executor.nj, features)) as pool:
        refs = _merge(pool.call("references"))
        info = _adapt_for_decoding(pool, split, refs, hclg, words, tm, am, alimdl, silence_phones, beam)
        return info, final_pass(pool, refs)


def decode_fmllr_wer(ws, model_dir, wer_set: str, executor, trans_model, am, *, alimdl, silence_phones,
                     beam: float = 13.0, scales=DECODE_SCALES, features=None, lm=None,
                     scoring: str = "kaldi-lattice", grid=None) -> dict:
    """:func:`~.gmm.decode_wer` with decode_fmllr.sh's passes (module docstring): on each split the
    SI pass, fMLLR, the second pass and fMLLR again, then the final pass on the adapted features,
    scored as the other GMM stages score theirs: ``scoring="kaldi-lattice"`` (default) picks Kaldi's
    ``score.sh`` point on dev from the final pass's lattices (``"kaldi-nbest"``: from its decodes at
    several LM weights; :mod:`.grid_score`, ``grid``) and decodes ``wer_set`` at it; ``"scales"``: the
    old search over acoustic ``scales``. Adds
    ``si_wer`` (first pass at 1/12) and ``passes`` (each split's pass WERs and fMLLR gains)."""
    from .graph import _word_table, compute_wer, make_graph
    from .grid_score import grid_dev_wers, grid_result, scoring_grid

    graph_dir = Path(model_dir) / "graph"
    make_graph(ws.lang, model_dir, graph_dir, **({"lm": lm} if lm else {}))
    hclg, words = graph_dir / "HCLG.fst", graph_dir / "words.txt"
    args = (executor, hclg, words, trans_model, am, alimdl, silence_phones, beam, features)

    def decode_at(point):
        def final_pass(pool, refs):
            hyps = _merge(pool.call("decode_at", str(hclg), trans_model, am, str(words), *point, beam=beam))
            return compute_wer(refs, hyps)
        return final_pass

    def decode_at_scale(scale):
        def final_pass(pool, refs):
            return compute_wer(refs, _merge(pool.call("decode", str(hclg), trans_model, am, str(words), scale,
                                                      beam=beam)))
        return final_pass

    grid = scoring_grid(scoring, grid)
    if grid is not None:
        log.info("decode_fmllr grid scoring: the final pass's %s, beam %g", grid.describe(), beam)

        def dev_grid(pool, refs):
            candidates = _merge(pool.call("grid_candidates", str(hclg), trans_model, am, grid, beam=beam))
            return grid_dev_wers(refs, candidates, grid, _word_table(words))

        dev_info, (dev, point) = _decode_split_fmllr(ws, "dev", *args, dev_grid)
        passes = {"dev": dev_info}
        if wer_set == "dev":
            result = dev[point]
        else:
            passes[wer_set], result = _decode_split_fmllr(ws, wer_set, *args, decode_at(point))
        result = grid_result(result, grid, point, dev)
        said = f"LM weight {point[0]}, penalty {point[1]}"
    else:
        def dev_scales(pool, refs):
            results = {}
            for scale in scales:
                results[scale] = decode_at_scale(scale)(pool, refs)
                log.info("decode_fmllr dev at acoustic scale %.4g: WER %.2f%%", scale, results[scale]["wer"])
            return results

        dev_info, dev = _decode_split_fmllr(ws, "dev", *args, dev_scales)
        best = min(scales, key=lambda sc: (dev[sc]["wer"], sc))
        passes = {"dev": dev_info}
        if wer_set == "dev":
            result = dev[best]
        else:
            passes[wer_set], result = _decode_split_fmllr(ws, wer_set, *args, decode_at_scale(best))
        result = {**result, "scoring": "scales", "acoustic_scale": best,
                  "dev_wer": {str(sc): dev[sc]["wer"] for sc in scales}}
        said = f"acoustic scale {best:.4g}"
    result = {**result, "si_wer": passes[wer_set]["si_wer"], "passes": passes}
    log.info("%s: decode_fmllr WER on %s = %.2f%% at %s, chosen on dev (SI first pass %.2f%%)",
             Path(model_dir).name, wer_set, result["wer"], said, result["si_wer"])
    return result


# ---------------------------------------------------------------------------------------------
# the stage


def train_sat(ws, executor, *, num_leaves: int | None = None, total_gauss: int | None = None,
              num_iters: int = 35, max_iter_inc: int = 25, realign_iters=DEFAULT_REALIGN_ITERS,
              fmllr_iters=DEFAULT_FMLLR_ITERS, silence_weight: float = TRAIN_SILENCE_WEIGHT, power: float = 0.25,
              beam: float = 10.0, retry_beam: float = 40.0, thresh: float = 300.0, cluster_thresh: float = -1.0,
              decode: bool = True, decode_beam: float = 13.0, decode_scales=DECODE_SCALES,
              decode_scoring: str = "kaldi-lattice",
              align_splits=DEFAULT_ALIGN_SPLITS) -> dict:
    """Train tri3 from ``exp/<c>/tri2_ali`` and write ``exp/<c>/{tri3,tri3_ali}`` (see module docstring)."""
    from .grid_score import scoring_grid
    from .kaldi_io import read_ali_dir, read_model
    from .lang import Lang
    from .train_mono import wer_split

    scoring_grid(decode_scoring)   # a wrong decode_scoring stops the stage now, not after its training

    sizes = stage_sizes(ws, {"num_leaves": num_leaves, "total_gauss": total_gauss})
    num_leaves, total_gauss = sizes["num_leaves"], sizes["total_gauss"]
    lang = Lang.load(ws.lang)
    silence = list(lang.silence_phone_ids)
    report = SkipReport("tri3")
    problems_log = ProblemLog(report)
    src = tri2_ali_dir(ws)
    prev_tm, prev_am = read_model(src / "final.mdl")
    prev_ali = read_ali_dir(src)
    features = si_features(src)
    realign_iters = set(int(i) for i in realign_iters)
    fmllr_iters = set(int(i) for i in fmllr_iters)
    history, fmllr_history = [], []
    jobs = shard_args(ws, "train", executor.nj, features)
    num_utts = sum(len(a[3]) for a in jobs)
    with executor.shards(jobs) as pool:
        start_from_alignments(pool, jobs, prev_ali, report, problems_log,
                              "no tri2 alignment: left out of the first fMLLR and the tree statistics")
        # train_sat.sh stage -5: fMLLR of tri2's model on its alignments, then everything on adapted features.
        fmllr_history.append(fmllr_pass(pool, prev_tm, prev_am, silence, silence_weight, 0))
        tree, tree_stats, questions, ctx_dep, tm, am, _ = start_new_tree(
            pool, lang, prev_tm, problems_log, num_leaves=num_leaves, thresh=thresh, cluster_thresh=cluster_thresh,
            stage="tri3")

        def fmllr_before_accumulate(it, am):
            if it not in fmllr_iters:
                return am, {}
            fmllr_history.append(fmllr_pass(pool, tm, am, silence, silence_weight, it))
            return am, {"fmllr_objf_impr_per_frame": fmllr_history[-1]["objf_impr_per_frame"]}

        num_gauss = am.num_pdfs
        inc_gauss = max(0, (total_gauss - num_gauss) // max(max_iter_inc, 1))
        log.info("tri3: %d pdfs, %d transition-ids; target %d Gaussians (+%d per iteration); fMLLR on iterations %s",
                 tm.num_pdfs, tm.num_transition_ids, total_gauss, inc_gauss, sorted(fmllr_iters))
        am = run_em_iterations(pool, tm, am, stage="tri3", num_iters=num_iters, realign_iters=realign_iters,
                               beams=lambda it: (beam, retry_beam), num_gauss=num_gauss, inc_gauss=inc_gauss,
                               max_iter_inc=max_iter_inc, power=power, problems_log=problems_log, history=history,
                               before_accumulate=fmllr_before_accumulate)

        final = pool_align(pool, tm, am, beam, retry_beam)
        problems_log.add(final.failed)
        train_alignments = pool.call("get_alignments")
        final_stats, _ = pool_acc_stats(pool, tm, am)
        two_feats, _ = sum_stats(pool.call("acc_stats_twofeats", tm, am))
        train_transforms = pool.call("get_speaker_transforms")
    alimdl = estimate_alimdl(am, two_feats)
    occs = final_stats.pdf_occs(GmmParams.from_am(am).offsets)
    out, ali_out = tri3_dir(ws), tri3_ali_dir(ws)
    outputs = write_model_dir(out, tm, am, ctx_dep, occs, ws.lang, train_alignments)
    outputs += write_sat_files(out, src, train_transforms, alimdl, tm)
    write_json(out / "tree_info.json", {**tree.info, "questions": len(questions),
                                        "tree_stats_events": len(tree_stats)})
    split_transforms: list[dict] = []
    ali_outputs, split_summary = write_ali_dir(ws, ali_out, (tm, am, ctx_dep, occs), train_alignments, final,
                                               executor=executor, beam=beam, retry_beam=retry_beam,
                                               problems_log=problems_log, align_splits=align_splits,
                                               features=features, stage="tri3",
                                               aligner=fmllr_aligner(alimdl, silence, split_transforms))
    ali_outputs += write_sat_files(ali_out, src, train_transforms + split_transforms, alimdl, tm)

    diagnostics = stage_diagnostics(num_utts, final, final_stats, am, history, problems_log, report,
                                    num_leaves_requested=num_leaves, tree=tree.info, splits=split_summary,
                                    fmllr=fmllr_history,
                                    alimdl_avg_loglike_per_frame=two_feats.loglike / max(two_feats.frames, 1))

    def wer_check(ws, out_dir, wer_set, executor, trans_model, am, **kw):
        return decode_fmllr_wer(ws, out_dir, wer_set, executor, trans_model, am, alimdl=alimdl,
                                silence_phones=silence, **kw)

    summary = finish_gmm_stage(ws, out, diagnostics, report, outputs + ali_outputs, decode=decode,
                               wer_set=wer_split(ws), executor=executor, trans_model=tm, am=am,
                               decode_beam=decode_beam, decode_scales=decode_scales, features=features,
                               decode_scoring=decode_scoring, wer_check=wer_check)
    if decode and diagnostics.get("wer_details"):
        summary["si_wer"] = diagnostics["wer_details"]["si_wer"]
    return summary


@declares_inputs(aligned_splits_input)
@resolves_defaults(stage_sizes)
def tri3_stage(ws, nj: int = 2, cluster: str | None = None, **options) -> dict:
    """Stage function for ``run_stage("tri3", ws, tri3_stage, nj=..., ...)``: ``nj`` jobs on ``cluster``
    (as :func:`~.train_mono.mono_stage`)."""
    with Executor(nj, cluster) as executor:
        return train_sat(ws, executor, **options)
