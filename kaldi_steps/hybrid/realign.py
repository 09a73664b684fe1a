"""Forced realignment (and decoding) with the hybrid BLSTM, as Kaldi's ``steps/nnet3/align.sh``.

The network gives log-posteriors ``log p(pdf | x)``; the HMM wants scaled
log-likelihoods, so each frame's pseudo-likelihood is
``acoustic_scale * (log p(pdf | x) - log p(pdf))`` (Bayes' rule, priors from
:mod:`.priors`). ``khg.DecodableCtc(matrix)`` reads ``matrix[frame, transition_id - 1]``,
so the per-pdf scores are gathered into one column per transition-id through the
transition model's transition-id -> pdf map (:func:`transition_id_matrix`).

Alignment runs over the training graphs (transition/self-loop scales 0 at
compilation, then ``add_transition_probs`` 1.0 / 0.1 with the model, as the GMM
stage does), beam 10 and retry beam 40, in ``nj`` jobs of a local Dask cluster or of the stage's
``--cluster`` (:class:`~weakalign.kaldi_steps.execution.Executor`); the network's forward pass runs
in the main process, one block of utterances ahead of the workers.

>>> import numpy as np
>>> tid2pdf = np.array([0, 0, 0, 1, 1, 2])      # index 0 unused: transition-ids are 1-based
>>> transition_id_matrix(np.array([[10., 20., 30.]]), tid2pdf).tolist()
[[10.0, 10.0, 20.0, 20.0, 30.0]]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger("weakalign")


def transition_id_matrix(pdf_scores: np.ndarray, tid2pdf: np.ndarray) -> np.ndarray:
    """``(T, num_pdfs)`` scores -> ``(T, num_transition_ids)``: column ``tid - 1`` holds pdf ``tid2pdf[tid]``.

    ``tid2pdf`` is indexed by transition-id (entry 0 unused), as
    ``TransitionModel.transition_id_to_pdf_array()`` returns it.
    """
    tid2pdf = np.asarray(tid2pdf)
    return np.ascontiguousarray(pdf_scores[:, tid2pdf[1:]], dtype=np.float32)


def pseudo_log_likelihoods(log_posteriors: np.ndarray, log_priors: np.ndarray,
                           acoustic_scale: float = 0.1) -> np.ndarray:
    """``acoustic_scale * (log p(pdf|x) - log p(pdf))``, float32 ``(T, num_pdfs)``."""
    if log_posteriors.shape[-1] != log_priors.shape[-1]:
        raise ValueError(f"network has {log_posteriors.shape[-1]} outputs but there are "
                         f"{log_priors.shape[-1]} priors")
    return (acoustic_scale * (log_posteriors - log_priors)).astype(np.float32)


def tid2pdf_array(trans_model) -> np.ndarray:
    return np.asarray(trans_model.transition_id_to_pdf_array(), dtype=np.int64)


@dataclass
class AlignResult:
    utt_id: str
    alignment: np.ndarray | None     # transition-ids, None when alignment failed
    retried: bool
    log_like: float
    error: str = ""


# --- worker side -----------------------------------------------------------------------------

_WORKER: dict = {}


def _align_chunk(state: tuple, token: str, chunk: list) -> list[AlignResult]:
    """In a Dask worker: the chunk's results, the worker set up from ``state`` (the arguments of
    :func:`_init_worker`, scattered once) the first time it sees this run's ``token`` -- also a
    worker that the nanny restarted, so a retried chunk finds what it needs."""
    if _WORKER.get("token") != token:
        _init_worker(*state)
        _WORKER["token"] = token
    return [_align_one(task) for task in chunk]


def _init_worker(compile_graph: Callable, trans_model, beam: float, retry_beam: float,
                 transition_scale: float, self_loop_scale: float) -> None:
    import kaldi_hmm_gmm as khg

    _WORKER.update(compile_graph=compile_graph, trans_model=trans_model,
                   config=khg.AlignConfig(beam=beam, retry_beam=retry_beam),
                   scales=(transition_scale, self_loop_scale),
                   tid2pdf=tid2pdf_array(trans_model))


def _align_one(task: tuple[str, list[int], np.ndarray]) -> AlignResult:
    import kaldi_hmm_gmm as khg

    utt_id, word_ids, pdf_loglikes = task
    w = _WORKER
    try:
        graph = w["compile_graph"](word_ids)
    except Exception as e:  # noqa: BLE001 -- a bad transcript must not stop the others
        return AlignResult(utt_id, None, False, 0.0, f"graph compilation failed: {e}")
    # Training graphs hold no disambiguation symbols any more (the compiler removed them).
    khg.add_transition_probs(trans_model=w["trans_model"], disambig_syms=[],
                             transition_scale=w["scales"][0], self_loop_scale=w["scales"][1], fst=graph)
    decodable = khg.DecodableCtc(transition_id_matrix(pdf_loglikes, w["tid2pdf"]))
    # The matrix is already scaled: align_utterance_wrapper's scale only rescales the reported likelihood.
    done, error, retried, like, _, alignment, _ = khg.align_utterance_wrapper(
        w["config"], utt_id, 1.0, graph, decodable, 0, 0, 0, 0.0, 0)
    if not done or not alignment:
        return AlignResult(utt_id, None, bool(retried), 0.0,
                           f"no alignment reached the final state (beam {w['config'].beam}, "
                           f"retry beam {w['config'].retry_beam})")
    return AlignResult(utt_id, np.asarray(alignment, dtype=np.int32), bool(retried), float(like))


# --- main side -------------------------------------------------------------------------------

def align_utterances(tasks: Iterable[tuple[str, list[int], Callable[[], np.ndarray]]], *,
                     compile_graph: Callable[[list[int]], object], trans_model,
                     nj: int = 1, cluster: str | None = None, shared: tuple = (),
                     beam: float = 10.0, retry_beam: float = 40.0,
                     transition_scale: float = 1.0, self_loop_scale: float = 0.1,
                     block: int = 32) -> Iterator[AlignResult]:
    """Align ``(utt_id, word_ids, make_pdf_loglikes)`` tasks; yields results in input order.

    ``make_pdf_loglikes()`` returns the utterance's scaled ``(T, num_pdfs)`` pseudo-log-likelihoods
    (called in this process, e.g. the network's forward pass); ``compile_graph(word_ids)``
    returns its training graph compiled with transition/self-loop scale 0 (it must pickle
    when ``nj > 1``: a module-level function or a ``functools.partial`` of one). ``cluster``: where
    the ``nj`` jobs run (:class:`~..execution.Executor`; None: a local cluster), ``shared`` the folders
    its workers must see as this process does.
    """
    init_args = (compile_graph, trans_model, beam, retry_beam, transition_scale, self_loop_scale)
    if nj <= 1 and not cluster:
        _init_worker(*init_args)
        for utt_id, word_ids, make in tasks:
            yield _align_one((utt_id, word_ids, make()))
        return
    yield from _align_on_dask(tasks, init_args, max(1, nj), block, cluster, shared)


def _align_on_dask(tasks, init_args: tuple, nj: int, block: int, cluster: str | None = None,
                   shared: tuple = ()) -> Iterator[AlignResult]:
    """``nj`` Dask jobs (on ``cluster``, else on local workers) align each block of tasks, split into
    ``nj`` chunks, while this process computes the next block's scores; results gathered in input order."""
    import uuid

    from ..execution import Executor

    with Executor(nj, cluster, shared=shared) as executor:
        client = executor.client
        # One copy of the graph compiler and model on every worker (a list: scatter it whole).
        [state] = client.scatter([init_args], broadcast=True, hash=False)
        token = uuid.uuid4().hex

        def submit(batch: list):
            chunks = [batch[i::nj] for i in range(nj) if batch[i::nj]]
            return [client.submit(_align_chunk, state, token, chunk, pure=False) for chunk in chunks]

        def results(futures) -> list[AlignResult]:
            # The chunks interleave the block (task i in chunk i % nj): put them back in order.
            done = client.gather(futures)
            return [done[i % len(done)][i // len(done)] for i in range(sum(map(len, done)))]

        pending = None
        batch: list = []
        for utt_id, word_ids, make in tasks:
            batch.append((utt_id, word_ids, make()))
            if len(batch) >= block:
                # Overlap: the workers align this block while we compute the next one.
                if pending is not None:
                    yield from results(pending)
                pending, batch = submit(batch), []
        if pending is not None:
            yield from results(pending)
        if batch:
            yield from results(submit(batch))


def decode_hybrid(hclg, items: Iterable[tuple[str, np.ndarray]], trans_model, words, decode_set: Callable,
                  **decode_options) -> dict[str, list[str]]:
    """Decode ``(utt_id, scaled pdf log-likelihoods)`` with ``decode_set`` (graph.py) over ``hclg``."""
    import kaldi_hmm_gmm as khg

    tid2pdf = tid2pdf_array(trans_model)
    decodables = ((utt, khg.DecodableCtc(transition_id_matrix(ll, tid2pdf))) for utt, ll in items)
    return decode_set(hclg, decodables, words, **decode_options)
