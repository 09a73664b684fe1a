"""State-level lattices from one decode, and their best paths over Kaldi's scoring grid.

Kaldi scores a decode by writing each utterance's lattice once (``gmm-latgen-faster``,
``latgen-faster-mapped``: beam 13, lattice beam 6, acoustic scale ``1/12``) and taking, per LM
weight ``w`` and word insertion penalty ``p`` of ``local/score.sh``, the lattice's best path under
``graph_cost + acoustic_cost / w + p * #words`` (``lattice-scale | lattice-add-penalty |
lattice-best-path``). Here the lattice comes from kaldi-decoder's ``LatticeSimpleDecoder``
(``get_raw_lattice``: the token graph that survived the lattice beam, word labels on its arcs,
each arc's graph and scaled acoustic cost; :class:`LatticeDecoder`), is read into arrays from its
OpenFst binary form (:class:`RawLattice`, exact float32 weights, acoustic costs unscaled as Kaldi's
``latgen`` writes them), and the best paths of *every* grid point of *many* utterances come out of
one Viterbi pass over their arcs (:func:`grid_best_paths`): states are visited by their depth in
the lattice, the same depth of all utterances at once, each arc's cost a row of the grid's
``(w, p)`` columns. Paths of equal cost (homophones) go to the smaller word ids, as Kaldi's do
(:data:`TIE_BREAK`).

Kaldi determinises the lattice before it scores it (``DeterminizeLatticePhonePruned``); that keeps
each word sequence's best path, so the best path of the raw lattice is the same one, up to the
paths pruning removes.

>>> lat = RawLattice(start=0, num_states=3, src=np.array([0, 0, 1]), dst=np.array([1, 2, 2]),
...                  olabel=np.array([5, 7, 0]), graph=np.array([1.0, 3.0, 0.5]),
...                  acoustic=np.array([40.0, 10.0, 0.0]), final_state=np.array([2]),
...                  final_graph=np.array([0.0]), final_acoustic=np.array([0.0]))
>>> [(p.words, p.graph, p.acoustic) for p in grid_best_paths([lat], [(10, 0.0), (20, 0.0)])[0]]
[((7,), 3.0, 10.0), ((5,), 1.5, 40.0)]
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .grid_score import Candidate, LoglikeDecoder, Progress, decode_candidates, scaled_by_transition

log = logging.getLogger("weakalign")

_OPENFST_MAGIC = 2125659606
#: An arc of OpenFst's binary ``VectorFst<LatticeArc>``.
_ARC = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("graph", "<f4"), ("acoustic", "<f4"), ("nextstate", "<i4")])

#: Cost per unit of word id added to word arcs: of paths whose costs tie (homophones such as O and OH
#: through the same states), the one with the smaller word ids wins, as in Kaldi, whose determinised
#: lattice orders a state's arcs by label and whose shortest path keeps the first of equal costs.
TIE_BREAK = 1e-6

#: Arcs per Viterbi pass of :func:`grid_best_paths` (a pass holds arcs x grid points costs).
ARCS_PER_PASS = 200_000


@dataclass
class RawLattice:
    """One acyclic state-level lattice as arrays: arcs ``src -> dst`` with their word label
    (0: none), graph cost and *unscaled* acoustic cost ``-log p(x|arc)``; final states with theirs."""

    start: int
    num_states: int
    src: np.ndarray
    dst: np.ndarray
    olabel: np.ndarray
    graph: np.ndarray
    acoustic: np.ndarray
    final_state: np.ndarray
    final_graph: np.ndarray
    final_acoustic: np.ndarray

    @classmethod
    def from_kaldifst(cls, lat, acoustic_scale: float) -> "RawLattice":
        """Arrays of a ``kaldifst.Lattice`` decoded at ``acoustic_scale`` (its acoustic costs are
        divided by it, as ``latgen`` does before it writes a lattice). Read from OpenFst's binary
        form, which keeps the float32 weights exactly (the text form rounds them to 6 digits, enough
        to break near-ties between paths the wrong way); an arc iterator would cost a Python call per arc."""
        import os
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".fst")
        os.close(fd)
        try:
            lat.write(path)
            with open(path, "rb") as f:
                data = f.read()
        finally:
            os.unlink(path)
        return cls.from_openfst_bytes(data, acoustic_scale)

    @classmethod
    def from_openfst_bytes(cls, data: bytes, acoustic_scale: float) -> "RawLattice":
        """A ``VectorFst<LatticeArc>`` in OpenFst's binary format (header; per state its final weight,
        its number of arcs, then the arcs as ilabel, olabel, graph, acoustic, nextstate)."""
        magic, = struct.unpack_from("<i", data, 0)
        if magic != _OPENFST_MAGIC:
            raise ValueError(f"not an OpenFst binary FST (magic {magic})")
        pos = 4
        for _ in range(2):                       # the FST type and the arc type, as length-prefixed strings
            n, = struct.unpack_from("<i", data, pos)
            pos += 4 + n
        _version, flags = struct.unpack_from("<ii", data, pos)
        if flags & 0b111:
            raise ValueError("lattice with symbol tables or alignment flags: not what a decoder writes")
        _props, start, num_states, _num_arcs = struct.unpack_from("<Qqqq", data, pos + 8)
        pos += 40
        finals, first_arc, arcs_of = [], [], []
        unpack = struct.Struct("<ffq").unpack_from
        for s in range(num_states):              # only the state headers in Python; the arcs are gathered below
            final_graph, final_acoustic, n = unpack(data, pos)
            if final_graph != np.inf:
                finals.append((s, final_graph, final_acoustic))
            first_arc.append(pos + 16)
            arcs_of.append(n)
            pos += 16 + _ARC.itemsize * n
        counts = np.asarray(arcs_of, dtype=np.int64)
        starts = np.repeat(np.asarray(first_arc, dtype=np.int64), counts)
        rank = np.arange(len(starts)) - np.repeat(np.cumsum(counts) - counts, counts)
        raw = np.frombuffer(data, dtype=np.uint8)
        arcs = raw[(starts + _ARC.itemsize * rank)[:, None] + np.arange(_ARC.itemsize)].copy().view(_ARC).reshape(-1)
        F = np.array(finals, dtype=np.float64).reshape(-1, 3)
        return cls(start=int(start), num_states=int(num_states),
                   src=np.repeat(np.arange(num_states, dtype=np.int64), counts),
                   dst=arcs["nextstate"].astype(np.int64), olabel=arcs["olabel"].astype(np.int64),
                   graph=arcs["graph"].astype(np.float64),
                   acoustic=arcs["acoustic"].astype(np.float64) / acoustic_scale,
                   final_state=F[:, 0].astype(np.int64), final_graph=F[:, 1], final_acoustic=F[:, 2] / acoustic_scale)

    @property
    def num_arcs(self) -> int:
        return len(self.src)


def state_depths(num_states: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Each state's longest distance, in arcs, from a state without incoming arcs: every arc goes
    to a deeper state. Kahn's algorithm a level at a time (a state's level is when its last incoming
    arc is removed), so the Python loop runs once per depth, not per state. Raises ValueError on a
    cycle (a decoder's lattice has none).

    >>> state_depths(4, np.array([0, 0, 1, 2]), np.array([1, 2, 2, 3])).tolist()
    [0, 1, 2, 3]
    """
    order = np.argsort(src, kind="stable")
    heads = dst[order]
    begin = np.searchsorted(src[order], np.arange(num_states + 1))
    indegree = np.bincount(dst, minlength=num_states)
    depth = np.zeros(num_states, dtype=np.int64)
    frontier = np.flatnonzero(indegree == 0)
    level = visited = 0
    while len(frontier):
        depth[frontier] = level
        visited += len(frontier)
        counts = begin[frontier + 1] - begin[frontier]
        first = np.repeat(begin[frontier] - np.cumsum(counts) + counts, counts)
        reached, removed = np.unique(heads[first + np.arange(counts.sum())], return_counts=True)
        indegree[reached] -= removed
        frontier = reached[indegree[reached] == 0]
        level += 1
    if visited != num_states:
        raise ValueError("the lattice has a cycle")
    return depth


def grid_best_paths(lattices: Sequence[RawLattice], points: Sequence[tuple]) -> list[list[Candidate | None]]:
    """``[lattice][point]``: the best path of each lattice at each ``(lm_weight, penalty)`` point
    under ``graph + acoustic / lm_weight + penalty * #words`` (None: no final state reachable).
    Lattices are taken in passes of about :data:`ARCS_PER_PASS` arcs."""
    out, batch, arcs = [], [], 0
    for lat in lattices:
        if batch and arcs + lat.num_arcs > ARCS_PER_PASS:
            out += _viterbi_pass(batch, points)
            batch, arcs = [], 0
        batch.append(lat)
        arcs += lat.num_arcs
    if batch:
        out += _viterbi_pass(batch, points)
    return out


def _viterbi_pass(lattices: Sequence[RawLattice], points: Sequence[tuple]) -> list[list[Candidate | None]]:
    """:func:`grid_best_paths` of lattices held in memory together: their states renumbered into
    one array, relaxed depth by depth (every lattice's depth ``d`` in one step), then each
    (lattice, point)'s best final state traced back along the arcs that reached it."""
    w = np.array([p[0] for p in points], dtype=np.float64)
    pen = np.array([p[1] for p in points], dtype=np.float64)
    offsets = np.cumsum([0] + [lat.num_states for lat in lattices])
    src = np.concatenate([lat.src + o for lat, o in zip(lattices, offsets)])
    dst = np.concatenate([lat.dst + o for lat, o in zip(lattices, offsets)])
    olabel = np.concatenate([lat.olabel for lat in lattices])
    graph = np.concatenate([lat.graph for lat in lattices])
    acoustic = np.concatenate([lat.acoustic for lat in lattices])
    depth = state_depths(int(offsets[-1]), src, dst)
    starts = np.array([lat.start for lat in lattices], dtype=np.int64) + offsets[:-1]

    cost = graph[:, None] + acoustic[:, None] / w + pen * (olabel != 0)[:, None] + TIE_BREAK * olabel[:, None]
    best = np.full((offsets[-1], len(points)), np.inf)
    best[starts] = 0.0
    # Arcs by the depth of their tail, then by head: a depth's arcs into one state are a run, and the
    # minimum of each run is one reduceat (much faster than np.minimum.at's scattered updates).
    by_depth = np.lexsort((dst, depth[src]))
    tail_depth, head = depth[src][by_depth], dst[by_depth]
    bounds = np.searchsorted(tail_depth, np.arange(depth.max(initial=0) + 2))
    new_run = np.ones(len(by_depth), dtype=bool)
    new_run[1:] = (head[1:] != head[:-1]) | (tail_depth[1:] != tail_depth[:-1])
    for d in range(len(bounds) - 1):
        lo, hi = bounds[d], bounds[d + 1]
        if lo == hi:
            continue
        arcs = by_depth[lo:hi]
        runs = np.flatnonzero(new_run[lo:hi])
        into = head[lo:hi][runs]
        best[into] = np.minimum(best[into], np.minimum.reduceat(best[src[arcs]] + cost[arcs], runs, axis=0))

    # An arc reached its head's best cost exactly when its sum equals it: the same float operations.
    reached = best[src] + cost
    arc_of, point_of = np.nonzero(np.isfinite(reached) & (reached == best[dst]))
    back = np.full(best.shape, -1, dtype=np.int64)
    back[dst[arc_of], point_of] = arc_of

    n_points = len(points)
    end = np.full((len(lattices), n_points), -1, dtype=np.int64)
    end_graph = np.zeros(end.shape)
    end_acoustic = np.zeros(end.shape)
    for i, (lat, o) in enumerate(zip(lattices, offsets)):
        if len(lat.final_state) == 0:
            continue
        total = best[lat.final_state + o] + lat.final_graph[:, None] + lat.final_acoustic[:, None] / w
        pick = total.argmin(axis=0)
        ok = np.isfinite(total[pick, np.arange(n_points)])
        end[i] = np.where(ok, lat.final_state[pick] + o, -1)
        end_graph[i], end_acoustic[i] = lat.final_graph[pick], lat.final_acoustic[pick]

    # Trace every (lattice, point) back at once: one step per arc of the longest path.
    state = end.reshape(-1)
    column = np.tile(np.arange(n_points), len(lattices))
    stop = np.repeat(starts, n_points)
    steps = []
    live = state >= 0
    while live.any():
        live &= state != stop
        arc = np.where(live, back[np.maximum(state, 0), column], -1)
        if (live & (arc < 0)).any():
            raise AssertionError("lattice back-trace lost its path")
        steps.append(arc)
        state = np.where(live, src[np.maximum(arc, 0)], state)
    trace = np.stack(steps[::-1], axis=1) if steps else np.full((len(state), 0), -1)

    out = []
    for i in range(len(lattices)):
        row = []
        for k in range(n_points):
            m = i * n_points + k
            if end[i, k] < 0:
                row.append(None)
                continue
            path = trace[m][trace[m] >= 0]
            words = olabel[path]
            row.append(Candidate(tuple(int(x) for x in words[words != 0]),
                                   float(graph[path].sum() + end_graph[i, k]),
                                   float(acoustic[path].sum() + end_acoustic[i, k])))
        out.append(row)
    return out


class LatticeDecoder:
    """kaldi-decoder's ``LatticeSimpleDecoder`` over one HCLG, fed precomputed ``(frames, num_pdfs)``
    log-likelihoods (a GMM's, or a hybrid's scaled posteriors): Kaldi's ``decode.sh`` beams."""

    def __init__(self, hclg, trans_model, *, beam: float = 13.0, lattice_beam: float = 6.0):
        import kaldi_decoder

        config = kaldi_decoder.LatticeSimpleDecoderConfig()
        config.beam, config.lattice_beam = beam, lattice_beam
        self.hclg = hclg  # the decoder keeps a reference: keep the FST alive
        self.decoder = kaldi_decoder.LatticeSimpleDecoder(hclg, config)
        self.tid_to_pdf = np.asarray(trans_model.transition_id_to_pdf_array())

    def lattice(self, utt_id: str, loglikes: np.ndarray, acoustic_scale: float) -> RawLattice | None:
        """The utterance's lattice at ``acoustic_scale``; when no final state was reached, the
        lattice of the partial paths (Kaldi's ``--allow-partial``, with a warning); None, with a
        warning, when nothing survived the beam."""
        import kaldi_decoder

        self.decoder.decode(kaldi_decoder.DecodableCtc(scaled_by_transition(loglikes, self.tid_to_pdf, acoustic_scale)))
        _, lat = self.decoder.get_raw_lattice(True)
        if lat.num_states == 0:
            _, lat = self.decoder.get_raw_lattice(False)
            if lat.num_states == 0:
                log.warning("decode: %s: no path survived the beam; empty hypothesis", utt_id)
                return None
            log.warning("decode: %s: no final state reached; using the best partial path", utt_id)
        return RawLattice.from_kaldifst(lat, acoustic_scale)


def lattice_candidates(decoder, loglikes: Iterable[tuple[str, np.ndarray]], grid,
                       report_every_s: float = 60.0) -> dict[str, list[Candidate]]:
    """``utt -> distinct best paths`` of every ``grid`` point, from **one** decode per utterance
    to a lattice at acoustic scale ``1/grid.lattice_lm_weight`` (Kaldi's ``decode.sh``: 1/12) with a
    :class:`LatticeDecoder`: Kaldi's one decode + ``score.sh``. Rescoring them
    (:func:`~.grid_score.rescore`) gives each point's lattice best path, so the rest of the check is unchanged."""
    utts, lattices = [], []
    progress = Progress("lattice decode", report_every_s)
    for utt_id, ll in loglikes:
        utts.append(utt_id)
        lattices.append(decoder.lattice(utt_id, ll, 1.0 / grid.lattice_lm_weight))
        progress.done(len(utts))
    rows = iter(grid_best_paths([lat for lat in lattices if lat is not None], grid.points))
    out: dict[str, list[Candidate]] = {}
    for utt_id, lat in zip(utts, lattices):
        paths = [] if lat is None else next(rows)
        # In grid order, each path once (dict keys keep the first occurrence); None: no final state.
        out[utt_id] = list(dict.fromkeys(p for p in paths if p is not None))
    return out


def grid_candidates(hclg, trans_model, loglikes: Iterable[tuple[str, np.ndarray]], grid,
                    beam: float = 13.0) -> dict[str, list[Candidate]]:
    """``utt -> distinct paths`` to rescore over ``grid`` (:class:`~.grid_score.ScoringGrid`), found
    as its ``method`` says: one decode to lattices (:func:`lattice_candidates`) or one best-path
    decode per decoded LM weight (:func:`~.grid_score.decode_candidates`), over ``hclg`` with ``beam``."""
    if grid.method == "lattice":
        return lattice_candidates(LatticeDecoder(hclg, trans_model, beam=beam), loglikes, grid)
    return decode_candidates(LoglikeDecoder(hclg, trans_model, beam=beam), loglikes, grid.decode_lm_weights)
