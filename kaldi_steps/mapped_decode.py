"""Decoding precomputed pdf log-likelihoods in jobs, as Kaldi's ``nnet-forward | latgen-faster-mapped``.

A neural acoustic model's scores are computed once, in the process that holds the network, and
written as one Kaldi archive per job (:func:`write_loglike_arks`, Kaldi's ``JOB`` split); each job
then reads its own archive and decodes it with its own decoder over the HCLG file
(:func:`grid_candidates_in_jobs` for the grid scoring of :mod:`.grid_score`,
:func:`decode_point_in_jobs` for the one decode at the chosen point). Only file names and the small
hypotheses cross the Dask connection: the scores of a large dev set (hundreds of MiB) stay on disk,
where a worker on another machine reads them too (the exp root is on a shared filesystem).

Each utterance is decoded on its own, so the jobs find exactly the paths one decoder finds.

>>> deal_by_frames({"a": 300, "b": 100, "c": 250, "d": 120, "e": 90}, 2)
[['a', 'b'], ['c', 'd', 'e']]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from .grid_score import Candidate, LoglikeDecoder, decode_point
from .lattice import grid_candidates

log = logging.getLogger("weakalign")


def deal_by_frames(frames: Mapping[str, int], nj: int) -> list[list[str]]:
    """Utterance ids in ``nj`` jobs of similar total frames (a decode's time follows its frames):
    longest first to the job with the fewest frames so far; each job keeps the given order."""
    jobs: list[list[str]] = [[] for _ in range(max(1, min(nj, len(frames))))]
    load = [0] * len(jobs)
    job_of = {}
    for utt in sorted(frames, key=lambda u: -frames[u]):   # stable: ties keep the given order
        j = min(range(len(jobs)), key=lambda k: (load[k], k))
        job_of[utt], load[j] = j, load[j] + frames[utt]
    for utt in frames:
        jobs[job_of[utt]].append(utt)
    return jobs


def write_loglike_arks(loglikes: Mapping[str, np.ndarray], out_dir: Path, nj: int) -> tuple[list[Path], list[str]]:
    """``utt -> (T, num_pdfs) log-likelihoods`` as ``out_dir/loglikes.<j>.ark``, one archive per job
    (:func:`deal_by_frames`); the archives, and the utterance order to merge the jobs' results in."""
    import kaldiio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for j, utts in enumerate(deal_by_frames({u: len(x) for u, x in loglikes.items()}, nj)):
        paths.append(out_dir / f"loglikes.{j + 1}.ark")
        with kaldiio.WriteHelper(f"ark:{paths[-1]}") as writer:
            for utt in utts:
                # In their own precision (float32 or float64): the candidates' costs are exactly one decoder's.
                writer(utt, np.asarray(loglikes[utt]))
    return paths, list(loglikes)


def _candidates_job(ark: str, hclg_path: str, trans_model, grid, beam: float) -> dict:
    import kaldifst
    import kaldiio

    return grid_candidates(kaldifst.StdVectorFst.read(hclg_path), trans_model, kaldiio.load_ark(ark), grid, beam)


def _point_job(ark: str, hclg_path: str, trans_model, lm_weight: float, penalty: float, beam: float) -> dict:
    import kaldiio

    return decode_point(LoglikeDecoder.from_file(hclg_path, trans_model, penalty, beam), kaldiio.load_ark(ark),
                        lm_weight)


def _in_jobs(job, arks: list[Path], order: list[str], executor, what: str, *args) -> dict:
    """``job(ark, *args)`` for every archive on ``executor`` (:class:`~.execution.Executor`; in this
    process without a Dask client), the merged results in ``order``."""
    merged = {k: v for part in executor.map(job, [(str(a), *args) for a in arks], what) for k, v in part.items()}
    return {u: merged[u] for u in order}


def grid_candidates_in_jobs(arks: list[Path], order: list[str], hclg_path, trans_model, grid, executor,
                            beam: float = 13.0) -> dict[str, list[Candidate]]:
    """:func:`~.lattice.grid_candidates` of each archive in its own job, merged in ``order``."""
    log.info("grid decode: %d utterance(s), %s, in %d job(s)", len(order), grid.describe(), len(arks))
    return _in_jobs(_candidates_job, arks, order, executor, "grid decode", str(hclg_path), trans_model, grid, beam)


def decode_point_in_jobs(arks: list[Path], order: list[str], hclg_path, trans_model, lm_weight: float,
                         penalty: float, executor, beam: float = 13.0) -> dict[str, list[int]]:
    """:func:`~.grid_score.decode_point` over the HCLG with ``penalty`` per word, each archive in its own job."""
    return _in_jobs(_point_job, arks, order, executor, "decode at the grid point", str(hclg_path), trans_model,
                    lm_weight, penalty, beam)
