"""Scoring as Kaldi's ``local/score.sh``: the LM weight and word insertion penalty picked on dev
over Kaldi's grid, the test set scored at the dev-chosen point.

Kaldi decodes once to lattices and, per LM weight ``w`` and penalty ``p``, takes the lattice's
best path under ``graph_cost + acoustic_cost / w + p * #words`` (``lattice-scale
--inv-acoustic-scale=w | lattice-add-penalty --word-ins-penalty=p | lattice-best-path``). The
stages' check (``scoring="kaldi-lattice"``, :class:`ScoringGrid`'s ``method="lattice"``) does the
same: one decode per utterance to a lattice with kaldi-decoder, every grid point's best path from
it (:func:`.lattice.lattice_candidates`). Its former way, kept as ``"kaldi-nbest"``
(``method="nbest"``), replaces the lattice by an **n-best list built from one decode per decoded
LM weight** (``ScoringGrid.decode_lm_weights``: every other weight of the grid by default), as
kaldi-hmm-gmm's decoder returns only its best path. Either way:

1. the pdf log-likelihoods of each utterance are computed once (:func:`gmm_pdf_loglikes`, or
   a hybrid's scaled posteriors); with ``"nbest"``, for each decoded ``w`` the lattice decoder
   (Kaldi's beams) decodes them at acoustic scale ``1/w`` through ``khg.DecodableCtc``: its best
   path is *exactly* Kaldi's ``(w, 0.0)`` path (up to pruning);
2. each distinct path is kept with its graph cost, acoustic cost and word count
   (:class:`Candidate`); at ``(w, p)`` the cheapest candidate under Kaldi's rescoring cost is
   the hypothesis (:func:`rescore`). With lattices, the candidates are the grid points' own best
   paths. With ``"nbest"``, at a decoded ``w`` with ``p = 0`` this is the decode itself; elsewhere
   it is the best of the decoded paths, as Kaldi's is the best of the paths its one lattice kept;
   on real Kaldi's AN4 mono and tri1 models, decoding every other weight picks the same point on dev
   and gives the same test WER as decoding all eleven
   (``results/an4/wer_grid_scoring/decoded_lm_weights.json``);
3. the point is chosen on dev only (:func:`pick_point`); the test set is decoded once, exactly
   at that point: acoustic scale ``1/w`` over HCLG with ``p`` added to every word arc
   (:func:`penalised_graph`), which has the same best path as Kaldi's rescoring cost.

>>> grid = ScoringGrid(lm_weights=(9, 10), penalties=(0.0, 0.5))
>>> grid.points
[(9, 0.0), (9, 0.5), (10, 0.0), (10, 0.5)]
>>> pick_point({(9, 0.0): {"wer": 5.0}, (9, 0.5): {"wer": 4.0}, (10, 0.0): {"wer": 4.0}})
(9, 0.5)
>>> c = [Candidate((1, 2), graph=10.0, acoustic=500.0), Candidate((1,), graph=10.5, acoustic=500.0)]
>>> rescore({"u": c}, ScoringGrid(lm_weights=(10,), penalties=(0.0, 1.0)))
{(10, 0.0): {'u': [1, 2]}, (10, 1.0): {'u': [1]}}
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import numpy as np

log = logging.getLogger("weakalign")

#: Kaldi's ``local/score.sh`` defaults (``min_lmwt=7 max_lmwt=17``, ``word_ins_penalty=0.0,0.5,1.0``).
KALDI_LM_WEIGHTS = tuple(range(7, 18))
KALDI_PENALTIES = (0.0, 0.5, 1.0)


def every_other(lm_weights) -> tuple:
    """The default decoded LM weights: every other one of ``lm_weights``, both ends included.

    >>> every_other(KALDI_LM_WEIGHTS)
    (7, 9, 11, 13, 15, 17)
    >>> every_other((8, 9, 10, 11))
    (8, 10, 11)
    """
    weights = tuple(lm_weights)
    return tuple(sorted(set(weights[::2]) | {weights[-1]}))


#: How a grid check finds the paths it rescores: Kaldi's one decode to lattices (:mod:`.lattice`), or
#: one best-path decode per decoded LM weight (the n-best of this module).
GRID_METHODS = ("lattice", "nbest")


@dataclass(frozen=True)
class ScoringGrid:
    """The ``(LM weight, word insertion penalty)`` points tried on dev, and how dev's paths are found:
    ``method="lattice"`` (default), one decode per utterance to a lattice at acoustic scale
    ``1/lattice_lm_weight`` (Kaldi's ``decode.sh``); ``"nbest"``, one decode per LM weight of
    ``decode_lm_weights`` (default: :func:`every_other`).

    >>> ScoringGrid((9, 12), (0.0,)).as_dict()
    {'method': 'lattice', 'lm_weights': [9, 12], 'penalties': [0.0], 'lattice_lm_weight': 12.0}
    >>> ScoringGrid((9, 12), (0.0,), method="nbest").as_dict()["decode_lm_weights"]
    [9, 12]
    """

    lm_weights: tuple = KALDI_LM_WEIGHTS
    penalties: tuple = KALDI_PENALTIES
    decode_lm_weights: tuple | None = None
    method: str = "lattice"
    lattice_lm_weight: float = 12.0
    points: list = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.lm_weights or not self.penalties or min(self.lm_weights) <= 0:
            raise ValueError(f"scoring grid needs positive LM weights and some penalties, got "
                             f"{self.lm_weights} x {self.penalties}")
        if self.method not in GRID_METHODS:
            raise ValueError(f"unknown grid method {self.method!r}: use one of {GRID_METHODS}")
        decoded = every_other(self.lm_weights) if self.decode_lm_weights is None else tuple(self.decode_lm_weights)
        if not decoded or not set(decoded) <= set(self.lm_weights):
            raise ValueError(f"decoded LM weights {decoded} must be some of the grid's {self.lm_weights}")
        if self.lattice_lm_weight <= 0:
            raise ValueError(f"the lattices' LM weight must be positive, got {self.lattice_lm_weight}")
        object.__setattr__(self, "decode_lm_weights", decoded)
        object.__setattr__(self, "points", [(w, p) for w in self.lm_weights for p in self.penalties])

    def as_dict(self) -> dict:
        how = ({"lattice_lm_weight": float(self.lattice_lm_weight)} if self.method == "lattice"
               else {"decode_lm_weights": list(self.decode_lm_weights)})
        return {"method": self.method, "lm_weights": list(self.lm_weights), "penalties": list(self.penalties), **how}

    def describe(self) -> str:
        """How dev is decoded, for the log."""
        if self.method == "lattice":
            return f"dev decoded once to lattices at LM weight {self.lattice_lm_weight:g}"
        return f"dev decoded once per LM weight ({', '.join(map(str, self.decode_lm_weights))})"


#: The WER checks' ``scoring`` names of the grid methods (``decode_scoring`` of the GMM stages).
GRID_SCORINGS = {"kaldi-lattice": "lattice", "kaldi-nbest": "nbest"}
SCORINGS = (*GRID_SCORINGS, "scales")


def scoring_grid(scoring: str, grid: "ScoringGrid | None" = None) -> "ScoringGrid | None":
    """The grid of a WER check asked for as ``scoring`` (``grid``'s points, Kaldi's by default, with
    the scoring's method), None for ``"scales"``; a clear error for anything else.

    >>> scoring_grid("kaldi-nbest").method, scoring_grid("scales")
    ('nbest', None)
    """
    if scoring == "scales":
        return None
    if scoring not in GRID_SCORINGS:
        hint = " ('kaldi-grid' was the n-best check, now 'kaldi-nbest')" if scoring == "kaldi-grid" else ""
        raise ValueError(f"unknown WER scoring {scoring!r}{hint}: use one of {', '.join(map(repr, SCORINGS))}")
    return replace(grid or ScoringGrid(), method=GRID_SCORINGS[scoring])


@dataclass(frozen=True)
class Candidate:
    """One decoded path: its word ids, graph cost and (unscaled) acoustic cost ``-log p(x|path)``."""

    words: tuple
    graph: float
    acoustic: float

    def cost(self, lm_weight: float, penalty: float) -> float:
        """Kaldi's rescoring cost at ``(lm_weight, penalty)`` (``lattice-scale`` + ``lattice-add-penalty``)."""
        return self.graph + self.acoustic / lm_weight + penalty * len(self.words)


def pick_point(wers: Mapping[tuple, Mapping]) -> tuple:
    """The grid point with the lowest WER; ties go to the smaller LM weight, then the smaller
    penalty (as the fixture's ``pick_lmwt.py``). Only ever called with dev WERs."""
    return min(wers, key=lambda wp: (wers[wp]["wer"], wp[0], wp[1]))


def rescore(candidates: Mapping[str, list[Candidate]], grid: ScoringGrid) -> dict[tuple, dict[str, list[int]]]:
    """``(w, p) -> utt -> word ids``: each utterance's cheapest candidate at each grid point
    (first one on ties; an utterance without candidates gets an empty hypothesis)."""
    out = {}
    for w, p in grid.points:
        out[(w, p)] = {u: list(min(c, key=lambda x: x.cost(w, p)).words) if c else []
                       for u, c in candidates.items()}
    return out


def grid_dev_wers(refs: dict, candidates: dict, grid, word_table) -> tuple[dict, tuple]:
    """``({(w, p): dev WER dict}, the point picked)`` from dev's decoded paths (:func:`rescore`, :func:`pick_point`)."""
    from .graph import compute_wer, word_strings

    dev = {pt: compute_wer(refs, {u: word_strings(word_table, ids) for u, ids in hyps.items()})
           for pt, hyps in rescore(candidates, grid).items()}
    w, p = pick_point(dev)
    log.info("grid scoring on dev: best LM weight %s, penalty %s: WER %.2f%% (%d paths per utterance on average)",
             w, p, dev[(w, p)]["wer"], sum(map(len, candidates.values())) / max(len(candidates), 1))
    if at_grid_edge(grid, w):
        log.warning("grid scoring: the LM weight picked on dev, %s, is at the edge of the grid (%s..%s): a "
                    "wider grid might do better on dev", w, min(grid.lm_weights), max(grid.lm_weights))
    return dev, (w, p)


def at_grid_edge(grid, lm_weight) -> bool:
    """Whether ``lm_weight`` is the grid's smallest or largest (the dev optimum may lie outside).

    >>> at_grid_edge(ScoringGrid(), 17), at_grid_edge(ScoringGrid(), 12)
    (True, False)
    """
    return len(grid.lm_weights) > 1 and lm_weight in (min(grid.lm_weights), max(grid.lm_weights))


def grid_result(result: dict, grid, point: tuple, dev: dict) -> dict:
    """A Kaldi-grid WER check's ``wer_details``: ``result`` (the WER at ``point``) with the grid,
    the point and every dev point's WER."""
    w, p = point
    scoring = next(name for name, method in GRID_SCORINGS.items() if method == grid.method)
    return {**result, "scoring": scoring, "grid": grid.as_dict(), "lm_weight": w, "penalty": p,
            "acoustic_scale": round(1.0 / w, 6), "at_grid_edge": bool(dev) and at_grid_edge(grid, w),
            "dev_wer": {f"{pw}_{pp}": r["wer"] for (pw, pp), r in dev.items()}}


def gmm_pdf_loglikes(params, feats: np.ndarray) -> np.ndarray:
    """``(frames, num_pdfs)`` GMM log-likelihoods (log-sum-exp over each pdf's Gaussians) from
    :class:`~weakalign.kaldi_steps.diag_gmm.GmmParams`, as ``DecodableAmDiagGmm`` computes them."""
    x = np.asarray(feats, dtype=np.float64)
    ll = params.gconsts + x @ params.means_invvars.T - 0.5 * ((x * x) @ params.inv_vars.T)
    top = np.maximum.reduceat(ll, params.offsets[:-1], axis=1)
    sizes = np.diff(params.offsets)
    summed = np.add.reduceat(np.exp(ll - np.repeat(top, sizes, axis=1)), params.offsets[:-1], axis=1)
    return np.log(summed) + top


def penalised_graph(hclg, penalty: float):
    """A copy of ``hclg`` with ``penalty`` added to the cost of every arc that outputs a word:
    decoding it at acoustic scale ``1/w`` minimises Kaldi's rescoring cost at ``(w, penalty)``."""
    import kaldifst

    if penalty == 0:
        return hclg
    out = kaldifst.StdVectorFst()
    for _ in range(hclg.num_states):
        out.add_state()
    out.start = hclg.start
    for s in range(hclg.num_states):
        out.set_final(s, hclg.final(s))
        for arc in kaldifst.ArcIterator(hclg, s):
            cost = arc.weight.value + (penalty if arc.olabel else 0.0)
            out.add_arc(s, kaldifst.StdArc(arc.ilabel, arc.olabel, cost, arc.nextstate))
    return out


def scaled_by_transition(loglikes: np.ndarray, tid_to_pdf: np.ndarray, acoustic_scale: float) -> np.ndarray:
    """``(frames, num_transition_ids)`` float32 ``acoustic_scale * loglikes[:, pdf(tid)]``: what a
    ``DecodableCtc`` reads (column ``tid - 1``) from ``(frames, num_pdfs)`` log-likelihoods."""
    return (acoustic_scale * loglikes[:, tid_to_pdf[1:]]).astype(np.float32)


class LoglikeDecoder:
    """kaldi-hmm-gmm's lattice decoder over one HCLG, fed precomputed ``(frames, num_pdfs)``
    log-likelihoods at a chosen acoustic scale (Kaldi's ``decode.sh`` beams by default)."""

    def __init__(self, hclg, trans_model, *, beam: float = 13.0, lattice_beam: float = 6.0,
                 max_active: int = 7000):
        import kaldi_hmm_gmm as khg

        config = khg.LatticeFasterDecoderConfig()
        config.beam, config.lattice_beam, config.max_active = beam, lattice_beam, max_active
        self.hclg = hclg  # the decoder keeps a reference: keep the FST alive
        self.decoder = khg.LatticeFasterDecoder(hclg, config)
        self.trans_model = trans_model
        self.tid_to_pdf = np.asarray(trans_model.transition_id_to_pdf_array())

    @classmethod
    def from_file(cls, hclg_path, trans_model, penalty: float = 0.0, beam: float = 13.0) -> "LoglikeDecoder":
        """A decoder over the HCLG at ``hclg_path``, with ``penalty`` per word (:func:`penalised_graph`)."""
        import kaldifst

        return cls(penalised_graph(kaldifst.StdVectorFst.read(str(hclg_path)), penalty), trans_model, beam=beam)

    def best_path(self, utt_id: str, loglikes: np.ndarray, acoustic_scale: float) -> Candidate | None:
        """The best path at ``acoustic_scale`` as a :class:`Candidate`, or None (with a warning)
        when no path survived the beam. A path that reached no final state is kept, with a warning."""
        import kaldi_hmm_gmm as khg

        decodable = khg.DecodableCtc(scaled_by_transition(loglikes, self.tid_to_pdf, acoustic_scale))
        ok, alignment, words, like = khg.decode_utterance_lattice_faster(
            self.decoder, decodable, self.trans_model, utt_id, True)
        if not alignment:
            log.warning("decode: %s: no path survived the beam; empty hypothesis", utt_id)
            return None
        if not ok:
            log.warning("decode: %s: no final state reached; using the best partial path", utt_id)
        acoustic = -float(loglikes[np.arange(len(alignment)), self.tid_to_pdf[np.asarray(alignment)]].sum())
        # like = -(graph cost + acoustic_scale * acoustic cost) of the best path.
        return Candidate(tuple(words), -like - acoustic_scale * acoustic, acoustic)


class Progress:
    """Logs how many utterances a long decode has done, every ``every_s`` seconds: on a large dev set
    a check runs for many minutes, and a job in this process has no other progress display."""

    def __init__(self, what: str, every_s: float = 60.0):
        self.what, self.every_s = what, every_s
        self.started = self.last = time.monotonic()

    def done(self, utterances: int) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            log.info("%s: %d utterance(s) in %.0f s", self.what, utterances, self.last - self.started)


def decode_candidates(decoder: LoglikeDecoder, loglikes: Iterable[tuple[str, np.ndarray]],
                      lm_weights: Iterable[float], report_every_s: float = 60.0) -> dict[str, list[Candidate]]:
    """``utt -> distinct best paths`` of one decode per LM weight in ``lm_weights`` (acoustic scale ``1/w``),
    saying how far it got every ``report_every_s`` seconds (:class:`Progress`)."""
    weights = list(lm_weights)
    out: dict[str, list[Candidate]] = {}
    progress = Progress(f"grid decode at {len(weights)} LM weight(s)", report_every_s)
    for utt_id, ll in loglikes:
        found = []
        for w in weights:
            c = decoder.best_path(utt_id, ll, 1.0 / w)
            if c is not None and all(c.words != f.words or c.acoustic != f.acoustic for f in found):
                found.append(c)
        out[utt_id] = found
        progress.done(len(out))
    return out


def decode_point(decoder: LoglikeDecoder, loglikes: Iterable[tuple[str, np.ndarray]],
                 lm_weight: float) -> dict[str, list[int]]:
    """``utt -> word ids`` of one decode at acoustic scale ``1/lm_weight`` (over the decoder's
    graph, penalised or not)."""
    out = {}
    for utt_id, ll in loglikes:
        c = decoder.best_path(utt_id, ll, 1.0 / lm_weight)
        out[utt_id] = list(c.words) if c is not None else []
    return out
