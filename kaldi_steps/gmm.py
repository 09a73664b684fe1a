"""The GMM-HMM training loops the mono, tri1, tri2 and tri3 stages share, over their jobs.

Viterbi EM as ``train_mono.sh``/``train_deltas.sh`` run it (:func:`run_em_iterations`: realign,
accumulate, re-estimate, mix up), the jobs' results gathered (:func:`pool_align`,
:func:`pool_acc_stats`), the model dir written (:func:`write_model_dir`), problems counted
(:class:`ProblemLog`), the WER check (:func:`decode_wer`) and the stage's diagnostics. The maths
of the models is :mod:`~weakalign.kaldi_steps.diag_gmm`'s, a job's share of a split
:mod:`~weakalign.kaldi_steps.shard`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weakalign.pipeline.io import write_json

from .diag_gmm import GmmStats, update_model
from .shard import shard_args

log = logging.getLogger("weakalign")


@dataclass
class AlignSummary:
    aligned: int
    retried: int
    failed: list
    avg_like: float  # per frame, as align_utterance_wrapper reports it (gmm-align-compiled's log)

    def as_dict(self) -> dict:
        return {"aligned": self.aligned, "retried": self.retried, "failed": len(self.failed),
                "avg_like_per_frame": self.avg_like}


def pool_align(pool, trans_model, am, beam: float, retry_beam: float) -> AlignSummary:
    res = pool.call("align", trans_model, am, beam, retry_beam)
    frames = sum(r["frames"] for r in res)
    return AlignSummary(sum(r["aligned"] for r in res), sum(r["retried"] for r in res),
                        [f for r in res for f in r["failed"]],
                        sum(r["like"] for r in res) / max(frames, 1))


def run_em_iterations(pool, tm, am, *, stage: str, num_iters: int, realign_iters: set, beams,
                      num_gauss: int, inc_gauss: int, max_iter_inc: int, power: float,
                      problems_log, history: list, before_accumulate=None):
    """Iterations 1..num_iters-1 of Viterbi EM, as train_mono.sh / train_deltas.sh run them.

    Realign on ``realign_iters`` with ``beams(it) -> (beam, retry_beam)``, accumulate, update with
    mixing up toward ``num_gauss`` (raised by ``inc_gauss`` up to ``max_iter_inc``). Appends one
    entry per iteration to ``history`` and returns the updated ``am``.

    ``before_accumulate(it, am) -> (am, info)``, when given, runs after the realignment and before
    the statistics (train_lda_mllt.sh estimates MLLT there and transforms the features and means);
    a non-empty ``info`` dict goes into that iteration's ``history`` entry.
    """
    from tqdm import tqdm

    last_align = None
    for it in tqdm(range(1, num_iters), desc=f"{stage} iterations", leave=False):
        realigned = it in realign_iters
        if realigned:
            last_align = pool_align(pool, tm, am, *beams(it))
            problems_log.add(last_align.failed, transient=True)
        extra = {}
        if before_accumulate is not None:
            am, extra = before_accumulate(it, am)
        stats, counts = pool_acc_stats(pool, tm, am)
        am, info = update_model(tm, am, stats, counts, mixup=num_gauss, power=power)
        avg = stats.loglike / max(stats.frames, 1)
        history.append({"iter": it, "avg_loglike_per_frame": avg, "num_gauss": am.num_gauss,
                        "trans_objf_impr_per_frame": info["trans_objf_impr_per_frame"],
                        **({"realigned": last_align.as_dict()} if realigned else {}), **(extra or {})})
        log.info("%s iter %d%s: avg loglike/frame %.4f over %d frames, %d Gaussians",
                 stage, it, " (realigned)" if realigned else "", avg, stats.frames, am.num_gauss)
        if it <= max_iter_inc:
            num_gauss += inc_gauss
    return am


def pool_equal_align(pool) -> AlignSummary:
    res = pool.call("equal_align")
    return AlignSummary(sum(r["aligned"] for r in res), 0, [f for r in res for f in r["failed"]], 0.0)


def pool_acc_stats(pool, trans_model, am) -> tuple[GmmStats, np.ndarray]:
    """Sum of every job's statistics, in job order (deterministic for a given ``nj``)."""
    parts = pool.call("acc_stats", trans_model, am)
    stats, counts = parts[0]
    for s, c in parts[1:]:
        stats.add(s)
        counts = counts + c
    return stats, counts


def write_model_dir(out_dir, trans_model, am, ctx_dep, occs: np.ndarray, lang_dir,
                    alignments: list[dict[str, np.ndarray]]) -> list:
    """Kaldi's experiment-dir files: final.mdl, tree, final.occs, phones.txt, num_jobs, ali.N.gz."""
    import shutil

    from weakalign.pipeline.io import atomic_open, atomic_path

    from .kaldi_io import write_ali_archive, write_kaldi_vector, write_model, write_tree

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Stale archives from an earlier run with more jobs would be read as part of this one.
    for old in out.glob("ali.*.gz"):
        old.unlink()
    write_model(out / "final.mdl", trans_model, am)
    write_tree(out / "tree", ctx_dep)
    write_kaldi_vector(out / "final.occs", np.asarray(occs, dtype=np.float64))
    with atomic_path(out / "phones.txt") as tmp:
        shutil.copyfile(Path(lang_dir) / "phones.txt", tmp)
    written = [out / "final.mdl", out / "tree", out / "final.occs", out / "phones.txt"]
    for j, ali in enumerate(alignments, start=1):
        path = out / f"ali.{j}.gz"
        write_ali_archive(path, sorted(ali.items()))
        written.append(path)
    with atomic_open(out / "num_jobs") as f:
        f.write(f"{len(alignments)}\n")
    written.append(out / "num_jobs")
    return written


class ProblemLog:
    """Bad input met by the jobs, each utterance named once per kind of problem.

    OOV words (mapped to ``<UNK>``; the utterance is kept) are warned about and counted in
    ``oov``; failures of an intermediate alignment (``transient=True``: the utterance just
    sits out that pass's statistics) are counted per utterance in ``transient`` and said in
    one line at the end (:meth:`log_transient`), not once per pass; anything else (no
    features, graph failure, failed final alignment) is a skip in the stage's
    :class:`SkipReport`, which counts an utterance once, under its first cause.
    """

    def __init__(self, report):
        self.report = report
        self.oov: list[str] = []
        self.transient: dict[str, int] = {}
        self.passes = 0
        self._seen: set = set()

    def add(self, problems, transient: bool = False) -> None:
        if transient:
            self.passes += 1
        for utt, reason in problems:
            kind = reason.split(":")[0]
            if transient:
                self.transient[utt] = self.transient.get(utt, 0) + 1
                continue
            if (utt, kind) in self._seen:
                continue
            self._seen.add((utt, kind))
            if kind == "oov":
                self.oov.append(utt)
                self.report.warn(utt, reason)
            else:
                self.report.skip(utt, reason)

    def add_all(self, results) -> None:
        for problems in results:
            self.add(problems)

    def log_transient(self) -> None:
        """One line for every utterance that failed intermediate alignment passes, with how many."""
        if self.transient:
            log.warning("%s: %d utterance(s) failed intermediate alignment passes and sat out those passes' "
                        "statistics: %s", self.report.stage, len(self.transient),
                        ", ".join(f"{u} ({n} of {self.passes})" for u, n in sorted(self.transient.items())))


#: Acoustic scales tried on dev (1/LM-weight for LM weights 8..25, as Kaldi's score.sh range).
DECODE_SCALES = (0.04, 0.05, 0.0625, 0.0833, 0.1, 0.125)


def _decode_split(ws, split, executor, hclg, words, trans_model, am, scales, beam, features=None):
    from .graph import compute_wer

    results = {}
    with executor.shards(shard_args(ws, split, executor.nj, features)) as pool:
        refs = {}
        for r in pool.call("references"):
            refs.update(r)
        for scale in scales:
            hyps = {}
            for h in pool.call("decode", str(hclg), trans_model, am, str(words), scale, beam=beam):
                hyps.update(h)
            results[scale] = compute_wer(refs, hyps)
            log.info("decode %s at acoustic scale %.4g: WER %.2f%%", split, scale, results[scale]["wer"])
    return results


def _scales_wer(ws, split_executor, wer_set, trans_model, am, hclg, words, beam, scales, features) -> dict:
    """The old check: one decode of dev per acoustic scale, the best scale applied to ``wer_set``."""
    dev = _decode_split(ws, "dev", split_executor, hclg, words, trans_model, am, scales, beam, features)
    best = min(scales, key=lambda s: (dev[s]["wer"], s))
    result = dev[best] if wer_set == "dev" else _decode_split(ws, wer_set, split_executor, hclg, words, trans_model,
                                                               am, [best], beam, features)[best]
    return {**result, "scoring": "scales", "acoustic_scale": best,
            "dev_wer": {str(s): dev[s]["wer"] for s in scales}}


def _grid_wer(ws, executor, wer_set, trans_model, am, hclg, words, beam, grid, features) -> dict:
    """Kaldi's ``score.sh`` way (:mod:`.grid_score`): dev's paths found by ``grid.method`` (one decode to
    lattices, or one decode per decoded LM weight), rescored over ``grid``, the point picked on dev,
    ``wer_set`` decoded once at that point."""
    from .graph import _word_table, compute_wer
    from .grid_score import grid_dev_wers, grid_result

    table = _word_table(words)
    # Minutes on a large dev set: say what runs.
    log.info("grid scoring: %s (the grid: %s..%s), beam %g, in %d job(s)", grid.describe(), min(grid.lm_weights),
             max(grid.lm_weights), beam, executor.nj)
    with executor.shards(shard_args(ws, "dev", executor.nj, features)) as pool:
        refs, candidates = {}, {}
        for r in pool.call("references"):
            refs.update(r)
        for c in pool.call("grid_candidates", str(hclg), trans_model, am, grid, beam=beam):
            candidates.update(c)
    dev, (w, p) = grid_dev_wers(refs, candidates, grid, table)
    if wer_set == "dev":
        result = dev[(w, p)]
    else:
        with executor.shards(shard_args(ws, wer_set, executor.nj, features)) as pool:
            refs, hyps = {}, {}
            for r in pool.call("references"):
                refs.update(r)
            for h in pool.call("decode_at", str(hclg), trans_model, am, str(words), w, p, beam=beam):
                hyps.update(h)
        result = compute_wer(refs, hyps)
    return grid_result(result, grid, (w, p), dev)


def decode_wer(ws, model_dir, wer_set: str, executor, trans_model, am, *, lm=None, beam: float = 13.0,
               scales=DECODE_SCALES, features=None, scoring: str = "kaldi-lattice", grid=None) -> dict:
    """WER sanity check: build HCLG for ``model_dir`` (``graph.make_graph``), choose the scoring
    point on ``dev`` only and report ``wer_set`` at it, in ``executor.nj`` jobs on ``executor``
    (:class:`~.execution.Executor`). ``features``: the model's
    :class:`~weakalign.kaldi_steps.feature_transform.FeatureSpec`.

    ``scoring="kaldi-lattice"`` (default): Kaldi's ``decode.sh`` + ``local/score.sh``: dev decoded once to
    lattices, the LM weight x insertion penalty ``grid`` (:class:`~.grid_score.ScoringGrid`, default
    7..17 x 0/0.5/1) scored on them (:func:`_grid_wer`). ``"kaldi-nbest"``: the same grid scored on the
    paths of one decode per decoded LM weight. ``"scales"``: the old search, one decode per acoustic
    scale in ``scales``, no penalty. Returns ``compute_wer``'s dict plus the scoring method, the chosen
    point and ``dev_wer``.
    """
    from .graph import make_graph
    from .grid_score import scoring_grid

    grid = scoring_grid(scoring, grid)
    graph_dir = Path(model_dir) / "graph"
    make_graph(ws.lang, model_dir, graph_dir, **({"lm": lm} if lm else {}))
    hclg, words = graph_dir / "HCLG.fst", graph_dir / "words.txt"
    if grid is not None:
        result = _grid_wer(ws, executor, wer_set, trans_model, am, hclg, words, beam, grid, features)
        point = f"LM weight {result['lm_weight']}, penalty {result['penalty']}"
    else:
        result = _scales_wer(ws, executor, wer_set, trans_model, am, hclg, words, beam, scales, features)
        point = f"acoustic scale {result['acoustic_scale']:.4g}"
    log.info("%s: WER on %s = %.2f%% at %s (chosen on dev)", Path(model_dir).name, wer_set, result["wer"], point)
    return result


def stage_diagnostics(num_utts: int, final: AlignSummary, final_stats, am, history: list, problems_log,
                      report, **extra) -> dict:
    """The ``diagnostics.json`` of a GMM stage (before its WER check), plus stage-specific ``extra``.
    Says the intermediate alignment failures in one line (:meth:`ProblemLog.log_transient`)."""
    problems_log.log_transient()
    return {
        "utterances": num_utts,
        "aligned": final.aligned,
        "retried": final.retried,
        "failed": len(final.failed),
        "failed_utterances": [u for u, _ in final.failed],
        "avg_loglike_per_frame": final_stats.loglike / max(final_stats.frames, 1),
        "avg_align_like_per_frame": final.avg_like,
        "frames": final_stats.frames,
        "num_pdfs": am.num_pdfs,
        "num_gauss": am.num_gauss,
        **extra,
        "wer": None,
        "wer_set": None,
        "wer_details": None,
        "iterations": history,
        "oov_utterances": len(problems_log.oov),
        "intermediate_alignment_failures": dict(sorted(problems_log.transient.items())),
        "skipped": report.summary(),
    }


def finish_gmm_stage(ws, out_dir, diagnostics: dict, report, outputs: list, *, decode: bool, wer_set: str,
                     executor, trans_model, am, decode_beam: float, decode_scales, features=None,
                     decode_scoring: str = "kaldi-lattice", wer_check=None) -> dict:
    """Write diagnostics, run the WER check if asked, and return the stage summary. ``wer_check``:
    a function with :func:`decode_wer`'s arguments and result to run instead of it (tri3's two passes)."""
    path = Path(out_dir) / "diagnostics.json"
    # Written before decoding too: the model and alignments are usable even if decoding is cut short.
    write_json(path, diagnostics)
    if decode:
        wer = (wer_check or decode_wer)(ws, out_dir, wer_set, executor, trans_model, am, beam=decode_beam,
                                        scales=decode_scales, features=features, scoring=decode_scoring)
        diagnostics.update({"wer": wer["wer"], "wer_set": wer_set, "wer_details": wer})
        write_json(path, diagnostics)
    report.log_summary()
    return {"outputs": [str(p) for p in outputs] + [str(path)],
            **{k: diagnostics[k] for k in ("utterances", "aligned", "failed", "num_pdfs", "num_gauss",
                                           "avg_loglike_per_frame", "wer", "wer_set")},
            **report.summary()}


def size_defaults(leaves: dict[str, int], gauss: dict[str, int]):
    """The resolver (:func:`~weakalign.pipeline.options.resolves_defaults`) of a triphone stage's
    size: ``num_leaves`` and ``total_gauss`` as given, else the corpus's entry of ``leaves`` and
    ``gauss``, else 500 and 4000.

    >>> sizes = size_defaults({"an4": 300}, {"an4": 2000})
    >>> sizes(type("Ws", (), {"corpus": "an4"}), {"num_leaves": None, "total_gauss": 1000})
    {'num_leaves': 300, 'total_gauss': 1000}
    """
    def resolve(ws, options: dict) -> dict:
        return {"num_leaves": options.get("num_leaves") or leaves.get(ws.corpus, 500),
                "total_gauss": options.get("total_gauss") or gauss.get(ws.corpus, 4000)}

    return resolve
