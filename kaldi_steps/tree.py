"""Phonetic decision trees, as Kaldi's acc-tree-stats / cluster-phones / build-tree / convert-ali.

Statistics are :class:`TreeStats`: one row per seen *event* (left phone, central
phone, right phone, pdf-class) holding a Gaussian's count, sum and sum of
squares over the Δ+ΔΔ frames aligned to it. Context-independent phones
(silence) are recorded with both neighbours 0, which is equivalent to Kaldi's
leaving the context keys out: no question can split them.

A tree is a small Python structure (:class:`Leaf`, :class:`Split`,
:class:`Table`) that maps events to leaves; :func:`tree_to_context_dependency`
serialises it as a Kaldi binary ``ContextDependency`` and loads it into
``kaldi_hmm_gmm`` (whose ``EventMap`` classes cannot be built from Python).

Building follows Kaldi's ``BuildTree``: a stub map from ``roots.txt`` (one leaf
per shared root, one per pdf-class for unshared roots), greedy best-question
splits from a priority queue until ``max_leaves`` or a gain below ``thresh``,
then bottom-up merging of leaves of the same root whose merge costs less than
``cluster_thresh`` (negative: the smallest split made). Questions on phones
come from :func:`cluster_phone_questions` (top-down 2-means over the phone
sets' pooled statistics, as ``cluster-phones``) plus the lang's extra
questions; questions on the pdf-class are Kaldi's ladder ``{0}, {0,1}, ...``.
There is no question refinement (``compile-questions --num-iters-refine=0``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))])
>>> events = np.array([[0, 1, 2, 0]] * 200 + [[0, 1, 3, 0]] * 200)
>>> stats = TreeStats.from_frames(events, x)
>>> tree = build_tree(stats, roots=[([1], True, True)], num_pdf_classes={1: 1},
...                   questions=[[2], [3]], max_leaves=4, thresh=10.0, cluster_thresh=0.0)
>>> tree.num_leaves
2
"""

from __future__ import annotations

import heapq
import logging
import struct
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

log = logging.getLogger("weakalign")

LOG_2PI = float(np.log(2 * np.pi))
PDF_CLASS = -1  # Kaldi's kPdfClass key
DEFAULT_VAR_FLOOR = 0.01  # acc-tree-stats' default


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass
class TreeStats:
    """Gaussian statistics per event; ``events[:, :N]`` = phone context, ``events[:, N]`` = pdf-class."""

    events: np.ndarray  # (n, N+1) int64
    count: np.ndarray  # (n,)
    x: np.ndarray  # (n, d) sums
    x2: np.ndarray  # (n, d) sums of squares
    context_width: int = 3
    central_position: int = 1

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def __len__(self) -> int:
        return len(self.count)

    @classmethod
    def from_frames(cls, events: np.ndarray, feats: np.ndarray, context_width: int = 3,
                    central_position: int = 1) -> "TreeStats":
        """Pool frames (one event row per frame) into per-event statistics."""
        events = np.asarray(events, dtype=np.int64)
        feats = np.asarray(feats, dtype=np.float64)
        uniq, inverse = np.unique(events, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        n = len(uniq)
        count = np.bincount(inverse, minlength=n).astype(np.float64)
        x = np.zeros((n, feats.shape[1]))
        x2 = np.zeros((n, feats.shape[1]))
        np.add.at(x, inverse, feats)
        np.add.at(x2, inverse, feats * feats)
        return cls(uniq, count, x, x2, context_width, central_position)

    @classmethod
    def merge(cls, parts: Sequence["TreeStats"]) -> "TreeStats":
        """Sum statistics of the same events (e.g. from parallel jobs), in a fixed order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no tree statistics to merge")
        events = np.concatenate([p.events for p in parts])
        uniq, inverse = np.unique(events, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        n = len(uniq)
        out = cls(uniq, np.zeros(n), np.zeros((n, parts[0].dim)), np.zeros((n, parts[0].dim)),
                  parts[0].context_width, parts[0].central_position)
        np.add.at(out.count, inverse, np.concatenate([p.count for p in parts]))
        np.add.at(out.x, inverse, np.concatenate([p.x for p in parts]))
        np.add.at(out.x2, inverse, np.concatenate([p.x2 for p in parts]))
        return out

    def key_column(self, key: int) -> int:
        return self.context_width if key == PDF_CLASS else key

    def subset(self, mask: np.ndarray) -> "TreeStats":
        return TreeStats(self.events[mask], self.count[mask], self.x[mask], self.x2[mask],
                         self.context_width, self.central_position)


def gauss_objf(count, x, x2, var_floor: float = DEFAULT_VAR_FLOOR):
    """Log-likelihood of data under its own ML diagonal Gaussian (Kaldi's ``GaussClusterable::Objf``).

    Works on single statistics or stacked rows (leading axes broadcast); zero counts give 0.
    """
    count = np.asarray(count, dtype=np.float64)
    safe = np.where(count > 0, count, 1.0)
    mean = x / safe[..., None]
    var = np.maximum(x2 / safe[..., None] - mean * mean, var_floor)
    dim = x.shape[-1]
    objf = -0.5 * count * (np.log(var).sum(-1) + dim * (1.0 + LOG_2PI))
    return np.where(count > 0, objf, 0.0)


# ---------------------------------------------------------------------------------------------
# the tree structure


@dataclass
class Leaf:
    id: int


@dataclass
class Split:
    key: int
    yes_set: frozenset
    yes: object
    no: object


@dataclass
class Table:
    key: int
    children: list  # index = value; None where no value is expected


@dataclass
class Tree:
    """An event map plus its context width / central position; leaves are pdf-ids 0..num_leaves-1."""

    root: object
    num_leaves: int
    context_width: int = 3
    central_position: int = 1
    info: dict = field(default_factory=dict)

    def map_events(self, events: np.ndarray) -> np.ndarray:
        """Leaf (pdf-id) for each event row (N phones + pdf-class); -1 where the map is undefined."""
        events = np.asarray(events, dtype=np.int64).reshape(-1, self.context_width + 1)
        out = np.full(len(events), -1, dtype=np.int64)
        _map_into(self.root, events, np.arange(len(events)), out, self.context_width)
        return out

    def pdf(self, phones: Sequence[int], pdf_class: int) -> int:
        return int(self.map_events(np.array([list(phones) + [pdf_class]]))[0])


def _col(key: int, width: int) -> int:
    return width if key == PDF_CLASS else key


def _map_into(node, events, idx, out, width):
    if len(idx) == 0 or node is None:
        return
    if isinstance(node, Leaf):
        out[idx] = node.id
    elif isinstance(node, Split):
        vals = events[idx, _col(node.key, width)]
        yes = np.isin(vals, list(node.yes_set))
        _map_into(node.yes, events, idx[yes], out, width)
        _map_into(node.no, events, idx[~yes], out, width)
    else:
        vals = events[idx, _col(node.key, width)]
        for v in np.unique(vals):
            if 0 <= v < len(node.children):
                _map_into(node.children[v], events, idx[vals == v], out, width)


def _leaves(node) -> list:
    if node is None:
        return []
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, Split):
        return _leaves(node.yes) + _leaves(node.no)
    return [leaf for c in node.children for leaf in _leaves(c)]


# ---------------------------------------------------------------------------------------------
# questions


def pdf_class_questions(max_num_pdf_classes: int) -> list[list[int]]:
    """Kaldi's ladder questions on the HMM position: ``[[0], [0, 1], ...]``."""
    return [list(range(i + 1)) for i in range(max_num_pdf_classes - 1)]


def cluster_phone_questions(stats: TreeStats, phone_sets: Sequence[Sequence[int]],
                            pdf_classes: Sequence[int] = (1,)) -> list[list[int]]:
    """Phone-set questions by top-down binary clustering, as Kaldi's ``cluster-phones``.

    Each set's statistics pool every event whose central phone is in the set and whose
    pdf-class is in ``pdf_classes``. Sets are split recursively in two by a 2-means on the
    Gaussian log-likelihood; every node of the resulting binary tree is a question. Sets
    without statistics are left out of the clustering (and said so).
    """
    P = stats.central_position
    sel = np.isin(stats.events[:, stats.context_width], list(pdf_classes))
    central = stats.events[:, P]
    items, item_sets = [], []
    for s in phone_sets:
        m = sel & np.isin(central, list(s))
        if stats.count[m].sum() <= 0:
            log.info("cluster-phones: no statistics for phone set %s; not clustered", list(s))
            continue
        items.append((stats.count[m].sum(), stats.x[m].sum(0), stats.x2[m].sum(0)))
        item_sets.append(sorted(s))
    if not items:
        return []
    c = np.array([i[0] for i in items])
    x = np.stack([i[1] for i in items])
    x2 = np.stack([i[2] for i in items])
    questions: list[list[int]] = []

    def recurse(idx: np.ndarray):
        questions.append(sorted(p for i in idx for p in item_sets[i]))
        if len(idx) < 2:
            return
        left, right = _two_means(c[idx], x[idx], x2[idx])
        recurse(idx[left])
        recurse(idx[right])

    recurse(np.arange(len(items)))
    return questions


def _two_means(c, x, x2, iters: int = 20):
    """Split items in two clusters minimising the summed Gaussian objf loss; deterministic."""
    n = len(c)
    if n == 2:
        return np.array([True, False]), np.array([False, True])
    means = x / c[:, None]
    first = int(np.argmax(c))
    second = int(np.argmax(((means - means[first]) ** 2).sum(1)))
    assign = np.zeros(n, dtype=bool)  # True = cluster A
    assign[first] = True
    if second == first:
        second = (first + 1) % n
    for _ in range(iters):
        centres = []
        if assign.sum() == 0 or (~assign).sum() == 0:
            break
        for m in (assign, ~assign):
            centres.append((c[m].sum(), x[m].sum(0), x2[m].sum(0)))
        # Cost of putting item i into a cluster = objf(cluster) + objf(item) - objf(cluster + item).
        costs = []
        for cc, cx, cx2 in centres:
            costs.append(gauss_objf(cc, cx, cx2) + gauss_objf(c, x, x2)
                         - gauss_objf(cc + c, cx + x, cx2 + x2))
        new = costs[0] <= costs[1]
        if new.all() or (~new).all():
            break
        if (new == assign).all():
            break
        assign = new
    if assign.all() or (~assign).all():  # degenerate: split off the most distant item
        assign = np.zeros(n, dtype=bool)
        assign[second] = True
    return assign, ~assign


# ---------------------------------------------------------------------------------------------
# building


def _stub(roots, num_pdf_classes, counter) -> tuple[object, list[tuple[object, bool]]]:
    """Stub map: binary splits on the central phone down to one subtree per root.

    Returns the map and, per stub leaf, whether it may be split further.
    """
    stub_leaves: list[tuple[Leaf, bool]] = []

    def root_tree(phones, shared, split):
        if shared:
            leaf = Leaf(next(counter))
            stub_leaves.append((leaf, split))
            return leaf
        n = max(num_pdf_classes[p] for p in phones)
        children = []
        for _ in range(n):
            leaf = Leaf(next(counter))
            stub_leaves.append((leaf, False))
            children.append(leaf)
        return Table(PDF_CLASS, children)

    def build(rs):
        if len(rs) == 1:
            return root_tree(*rs[0])
        half = len(rs) // 2
        yes_phones = frozenset(p for r in rs[:half] for p in r[0])
        return Split(1, yes_phones, build(rs[:half]), build(rs[half:]))

    return build(list(roots)), stub_leaves


def _best_split(stats: TreeStats, idx: np.ndarray, questions: dict[int, list[np.ndarray]],
                var_floor: float):
    """Best (gain, key, yes-values) over all questions for the events ``idx``."""
    c, x, x2 = stats.count[idx], stats.x[idx], stats.x2[idx]
    total = gauss_objf(c.sum(), x.sum(0), x2.sum(0), var_floor)
    best = (0.0, None, None)
    for key, qs in questions.items():
        if not qs:
            continue
        vals = stats.events[idx, stats.key_column(key)]
        uniq, inv = np.unique(vals, return_inverse=True)
        if len(uniq) < 2:
            continue
        onehot = np.zeros((len(uniq), len(idx)))
        onehot[inv, np.arange(len(idx))] = 1.0
        vc, vx, vx2 = onehot @ c, onehot @ x, onehot @ x2
        member = np.stack([np.isin(uniq, q) for q in qs]).astype(np.float64)  # (Q, V)
        yc, yx, yx2 = member @ vc, member @ vx, member @ vx2
        nc, nx, nx2 = c.sum() - yc, x.sum(0) - yx, x2.sum(0) - yx2
        ok = (member.sum(1) > 0) & (member.sum(1) < len(uniq))
        if not ok.any():
            continue
        gain = gauss_objf(yc, yx, yx2, var_floor) + gauss_objf(nc, nx, nx2, var_floor) - total
        gain = np.where(ok, gain, -np.inf)
        q = int(np.argmax(gain))
        if gain[q] > best[0]:
            best = (float(gain[q]), key, frozenset(int(v) for v in uniq[member[q] > 0]))
    return best


def build_tree(stats: TreeStats, roots: Sequence[tuple[Sequence[int], bool, bool]],
               num_pdf_classes: dict[int, int], questions: Sequence[Sequence[int]],
               *, max_leaves: int, thresh: float = 300.0, cluster_thresh: float = -1.0,
               var_floor: float = DEFAULT_VAR_FLOOR) -> Tree:
    """Grow and cluster a tree, as Kaldi's ``build-tree`` (see the module docstring).

    ``roots``: (phones, shared, split) per ``roots.txt`` line; ``num_pdf_classes``: phone ->
    pdf-classes of its HMM; ``questions``: phone sets to ask about any context position.
    """
    for phones, shared, split in roots:
        if split and not shared:
            raise ValueError(f"root {list(phones)}: splitting an unshared root is not supported (as Kaldi)")
    N = stats.context_width
    counter = iter(range(10**9))
    stub, stub_leaves = _stub(roots, num_pdf_classes, counter)
    max_pdf_classes = max(num_pdf_classes[p] for r in roots for p in r[0])
    qs = {k: [np.array(sorted(q)) for q in questions] for k in range(N)}
    qs[PDF_CLASS] = [np.array(q) for q in pdf_class_questions(max_pdf_classes)]
    members = _events_per_stub_leaf(stats, stub, stub_leaves)
    region = {leaf.id: leaf.id for leaf, _ in stub_leaves}  # leaf id -> stub leaf id (merging stays inside one root)
    growth = _grow(stats, stub_leaves, members, region, qs, counter, max_leaves=max_leaves, thresh=thresh,
                   var_floor=var_floor)
    root = _substitute(stub, growth.replaced)
    if cluster_thresh < 0:
        cluster_thresh = growth.smallest_split if np.isfinite(growth.smallest_split) else 0.0
    leaves = _leaves(root)
    merged_to = {leaf.id: leaf.id for leaf in leaves}
    num_removed = 0
    if cluster_thresh > 0:
        merged_to, num_removed = _cluster_leaves(stats, leaves, members, region, cluster_thresh, var_floor)
    num_pdfs = _renumber_leaves(leaves, merged_to)
    tree = Tree(root, num_pdfs, N, stats.central_position,
                info={"leaves_after_split": len(leaves), "merged_away": num_removed,
                      "split_gain": growth.total_gain, "smallest_split": growth.smallest_split,
                      "cluster_thresh": cluster_thresh, "num_pdfs": num_pdfs})
    log.info("build-tree: %d leaves after splitting (gain %.1f, smallest split %.1f), "
             "%d merged away (thresh %.1f) -> %d pdfs", len(leaves), growth.total_gain,
             growth.smallest_split, num_removed, cluster_thresh, num_pdfs)
    return tree


def _events_per_stub_leaf(stats: TreeStats, stub, stub_leaves) -> dict[int, np.ndarray]:
    """Stub leaf id -> the indices of the events (stats) that reach it; an event no root covers is an error."""
    stub_of_event = Tree(stub, 0, stats.context_width, stats.central_position).map_events(stats.events)
    if (stub_of_event < 0).any():
        bad = sorted(set(stats.events[stub_of_event < 0, stats.central_position].tolist()))
        raise ValueError(f"tree statistics for phones {bad} not covered by roots.txt")
    return {leaf.id: np.flatnonzero(stub_of_event == leaf.id) for leaf, _ in stub_leaves}


@dataclass
class _Growth:
    replaced: dict        # leaf id -> the Split that replaces it
    smallest_split: float
    total_gain: float


def _grow(stats: TreeStats, stub_leaves, members: dict, region: dict, qs: dict, counter, *, max_leaves: int,
          thresh: float, var_floor: float) -> _Growth:
    """Greedy splitting with a priority queue, each queued leaf carrying its best split, until
    ``max_leaves`` or a best gain below ``thresh``; ``members`` and ``region`` gain the new leaves."""
    num_leaves = len(stub_leaves)
    heap: list = []
    for leaf, splittable in stub_leaves:
        if splittable and len(members[leaf.id]):
            gain, key, yes = _best_split(stats, members[leaf.id], qs, var_floor)
            if key is not None:
                heapq.heappush(heap, (-gain, leaf.id, key, yes))
    growth = _Growth({}, float("inf"), 0.0)
    while heap and (max_leaves <= 0 or num_leaves < max_leaves):
        neg_gain, leaf_id, key, yes = heapq.heappop(heap)
        if -neg_gain < thresh:
            break
        idx = members.pop(leaf_id)
        vals = stats.events[idx, stats.key_column(key)]
        is_yes = np.isin(vals, list(yes))
        children = []
        for part in (idx[is_yes], idx[~is_yes]):
            new = Leaf(next(counter))
            members[new.id] = part
            region[new.id] = region[leaf_id]
            gain, k2, y2 = _best_split(stats, part, qs, var_floor)
            if k2 is not None:
                heapq.heappush(heap, (-gain, new.id, k2, y2))
            children.append(new)
        growth.replaced[leaf_id] = Split(key, yes, children[0], children[1])
        num_leaves += 1
        growth.smallest_split = min(growth.smallest_split, -neg_gain)
        growth.total_gain += -neg_gain
    return growth


def _renumber_leaves(leaves: list, merged_to: dict[int, int]) -> int:
    """Give merged leaves one id, numbered in traversal order so pdf-ids are 0..n-1; returns n."""
    new_id: dict[int, int] = {}
    for leaf in leaves:
        target = merged_to[leaf.id]
        if target not in new_id:
            new_id[target] = len(new_id)
    for leaf in leaves:
        leaf.id = new_id[merged_to[leaf.id]]
    return len(new_id)


def _substitute(node, replaced):
    if isinstance(node, Leaf):
        if node.id in replaced:
            s = replaced[node.id]
            return Split(s.key, s.yes_set, _substitute(s.yes, replaced), _substitute(s.no, replaced))
        return node
    if isinstance(node, Split):
        return Split(node.key, node.yes_set, _substitute(node.yes, replaced), _substitute(node.no, replaced))
    if isinstance(node, Table):
        return Table(node.key, [None if c is None else _substitute(c, replaced) for c in node.children])
    return node


def _cluster_leaves(stats, leaves, members, region, thresh, var_floor):
    """Bottom-up merging of same-root leaves while the cheapest merge costs < ``thresh``."""
    merged_to = {leaf.id: leaf.id for leaf in leaves}
    removed = 0
    by_region: dict[int, list[int]] = {}
    for leaf in leaves:
        by_region.setdefault(region[leaf.id], []).append(leaf.id)
    for ids in by_region.values():
        if len(ids) < 2:
            continue
        c = np.array([stats.count[members[i]].sum() for i in ids])
        x = np.stack([stats.x[members[i]].sum(0) for i in ids])
        x2 = np.stack([stats.x2[members[i]].sum(0) for i in ids])
        alive = np.ones(len(ids), dtype=bool)
        own = gauss_objf(c, x, x2, var_floor)
        while alive.sum() > 1:
            cost = (own[:, None] + own[None, :]
                    - gauss_objf(c[:, None] + c[None, :], x[:, None] + x[None, :],
                                 x2[:, None] + x2[None, :], var_floor))
            cost[~alive, :] = np.inf
            cost[:, ~alive] = np.inf
            np.fill_diagonal(cost, np.inf)
            a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
            if not cost[a, b] < thresh:
                break
            a, b = min(a, b), max(a, b)
            c[a] += c[b]
            x[a] += x[b]
            x2[a] += x2[b]
            own[a] = gauss_objf(c[a], x[a], x2[a], var_floor)
            alive[b] = False
            for leaf_id, target in merged_to.items():
                if target == ids[b]:
                    merged_to[leaf_id] = ids[a]
            removed += 1
    return merged_to, removed


# ---------------------------------------------------------------------------------------------
# Kaldi binary serialisation -> kaldi_hmm_gmm.ContextDependency


def _token(t: str) -> bytes:
    return t.encode() + b" "


def _int32(v: int) -> bytes:
    return b"\x04" + struct.pack("<i", int(v))


def _event_map_bytes(node) -> bytes:
    if node is None:
        return _token("NULL")
    if isinstance(node, Leaf):
        return _token("CE") + _int32(node.id)
    if isinstance(node, Split):
        yes = sorted(node.yes_set)
        return (_token("SE") + _int32(node.key) + b"\x04" + struct.pack("<i", len(yes))
                + struct.pack(f"<{len(yes)}i", *yes) + _token("{")
                + _event_map_bytes(node.yes) + _event_map_bytes(node.no) + _token("}"))
    # Table sizes are written as an unsigned 32-bit integer (size byte -4).
    return (_token("TE") + _int32(node.key) + b"\xfc" + struct.pack("<I", len(node.children))
            + _token("(") + b"".join(_event_map_bytes(c) for c in node.children) + _token(")"))


def tree_to_kaldi_bytes(tree: Tree) -> bytes:
    """The tree as Kaldi writes a binary ``tree`` file (with the ``\\0B`` header)."""
    return (b"\x00B" + _token("ContextDependency") + _int32(tree.context_width)
            + _int32(tree.central_position) + _token("ToPdf") + _event_map_bytes(tree.root)
            + _token("EndContextDependency"))


def context_dependency_from_kaldi_bytes(data: bytes):
    """Load Kaldi binary tree bytes into ``kaldi_hmm_gmm.ContextDependency`` via its pickle hook."""
    import kaldi_hmm_gmm as khg

    if data[:2] == b"\x00B":
        data = data[2:]
    ctx = khg.ContextDependency.__new__(khg.ContextDependency)
    ctx.__setstate__((list(np.frombuffer(data, dtype=np.int8).tolist()),))
    return ctx


def tree_to_context_dependency(tree: Tree):
    return context_dependency_from_kaldi_bytes(tree_to_kaldi_bytes(tree))


# ---------------------------------------------------------------------------------------------
# from alignments: tree stats, model initialisation, alignment conversion


class TransitionTables:
    """numpy lookups transition-id -> phone, hmm-state, pdf, is-final, transition index."""

    def __init__(self, trans_model):
        n = trans_model.num_transition_ids
        # TransitionModelTuple exposes its fields only through its pickle state.
        tuples = [tuple(t.__getstate__()) for t in trans_model.tuples]
        self.num_transition_ids = n
        self.phone = np.zeros(n + 1, dtype=np.int64)
        self.hmm_state = np.zeros(n + 1, dtype=np.int64)
        self.pdf = np.zeros(n + 1, dtype=np.int64)
        self.is_final = np.zeros(n + 1, dtype=bool)
        self.trans_index = np.zeros(n + 1, dtype=np.int64)
        self.state = np.zeros(n + 1, dtype=np.int64)
        id2state = np.asarray(trans_model.id2state, dtype=np.int64)
        state2id = np.asarray(trans_model.state2id, dtype=np.int64)
        tup = np.asarray(tuples, dtype=np.int64).reshape(-1, 4)
        tids = np.arange(1, n + 1)
        self.state[1:] = id2state[1:n + 1]
        self.phone[1:] = tup[self.state[1:] - 1, 0]
        self.hmm_state[1:] = tup[self.state[1:] - 1, 1]
        self.pdf[:] = np.asarray(trans_model.id2pdf_id, dtype=np.int64)[:n + 1]
        self.trans_index[1:] = tids - state2id[self.state[1:]]
        self.is_final[1:] = [trans_model.is_final(int(t)) for t in tids]
        self.is_self_loop = np.zeros(n + 1, dtype=bool)
        self.is_self_loop[1:] = [trans_model.is_self_loop(int(t)) for t in tids]
        # (phone, hmm_state, forward_pdf, self_loop_pdf) -> first transition-id of that state
        self.first_tid_of_tuple = {t: int(state2id[i + 1]) for i, t in enumerate(tuples)}


def split_phones(ali: np.ndarray, tables: TransitionTables) -> tuple[np.ndarray, np.ndarray]:
    """Phone instances of an alignment: (phone per instance, start frame per instance).

    Graphs are compiled with ``reorder=True`` (Kaldi's default): each HMM state's frames are
    its forward transition first, then its self-loops. State 0 has no incoming transitions
    but its self-loop, so a phone starts exactly at a non-self-loop transition out of state 0.
    """
    ali = np.asarray(ali)
    is_start = (tables.hmm_state[ali] == 0) & ~tables.is_self_loop[ali]
    starts = np.flatnonzero(is_start)
    if len(ali) == 0 or len(starts) == 0 or starts[0] != 0:
        raise ValueError("alignment does not start at the start of a phone")
    return tables.phone[ali[starts]], starts


def frame_events(ali: np.ndarray, tables: TransitionTables, ci_phones: set[int]) -> np.ndarray:
    """(T, 4) events (left, central, right, pdf-class) per frame of one alignment."""
    phones, starts = split_phones(ali, tables)
    lengths = np.diff(np.concatenate([starts, [len(ali)]]))
    left = np.concatenate([[0], phones[:-1]])
    right = np.concatenate([phones[1:], [0]])
    ci = np.isin(phones, list(ci_phones)) if ci_phones else np.zeros(len(phones), bool)
    left = np.where(ci, 0, left)
    right = np.where(ci, 0, right)
    ev = np.stack([np.repeat(left, lengths), np.repeat(phones, lengths), np.repeat(right, lengths),
                   tables.hmm_state[ali]], axis=1)
    return ev


def accumulate_tree_stats(items, tables: TransitionTables, ci_phones: set[int]) -> TreeStats:
    """As ``acc-tree-stats``: ``items`` yields (alignment, Δ+ΔΔ features) per utterance.

    The pdf-class of a frame is its HMM state (true of Kaldi's standard topologies).
    """
    evs, feats = [], []
    for ali, f in items:
        evs.append(frame_events(ali, tables, ci_phones))
        feats.append(f)
    return TreeStats.from_frames(np.concatenate(evs), np.concatenate(feats))


def init_gmm_from_tree_stats(tree: Tree, stats: TreeStats, var_floor: float = DEFAULT_VAR_FLOOR):
    """As ``gmm-init-model``: one Gaussian per pdf from the pooled stats of its events.

    Returns (AmDiagGmm, occs per pdf). A pdf without statistics gets the global Gaussian.
    """
    import kaldi_hmm_gmm as khg

    from .diag_gmm import single_gaussian_gmm

    leaf = tree.map_events(stats.events)
    n = tree.num_leaves
    c = np.bincount(leaf, weights=stats.count, minlength=n)
    x = np.zeros((n, stats.dim))
    x2 = np.zeros((n, stats.dim))
    np.add.at(x, leaf, stats.x)
    np.add.at(x2, leaf, stats.x2)
    gc, gx, gx2 = stats.count.sum(), stats.x.sum(0), stats.x2.sum(0)
    am = khg.AmDiagGmm()
    empty = 0
    for pdf in range(n):
        if c[pdf] <= 0:
            empty += 1
            cc, cx, cx2 = gc, gx, gx2
        else:
            cc, cx, cx2 = c[pdf], x[pdf], x2[pdf]
        am.add_pdf(single_gaussian_gmm(cx / cc, np.maximum(cx2 / cc - (cx / cc) ** 2, var_floor)))
    if empty:
        log.warning("gmm-init-model: %d pdf(s) had no statistics; initialised from global stats", empty)
    return am, c


def convert_alignment(ali: np.ndarray, old: TransitionTables, new: TransitionTables, ctx_dep) -> np.ndarray:
    """As ``convert-ali``: map an alignment to a new tree/model with the same topology.

    Each frame keeps its phone, HMM state and transition index; its pdfs come from the new
    tree given the phone's neighbours in the alignment (0 at the utterance edges).
    """
    phones, starts = split_phones(ali, old)
    lengths = np.diff(np.concatenate([starts, [len(ali)]]))
    N, P = ctx_dep.context_width, ctx_dep.central_position
    padded = np.concatenate([np.zeros(P, np.int64), phones, np.zeros(N - 1 - P, np.int64)])
    out = np.empty_like(np.asarray(ali))
    cache: dict = {}
    for i, (start, length) in enumerate(zip(starts, lengths)):
        window = tuple(int(v) for v in padded[i:i + N])
        for t in range(start, start + length):
            tid = int(ali[t])
            key = (window, int(old.hmm_state[tid]), int(old.trans_index[tid]))
            if key not in cache:
                cache[key] = _new_transition_id(window, key[1], key[2], ctx_dep, new, P)
            out[t] = cache[key]
    return out


def _new_transition_id(window, hmm_state, trans_index, ctx_dep, new: TransitionTables, P):
    # Standard topologies: forward and self-loop pdf-class both equal the HMM state.
    ok, pdf = ctx_dep.compute(list(window), hmm_state)
    if not ok:
        raise ValueError(f"tree has no pdf for context {window} state {hmm_state}")
    first = new.first_tid_of_tuple.get((window[P], hmm_state, pdf, pdf))
    if first is None:
        raise ValueError(f"no transition state for phone {window[P]} state {hmm_state} pdf {pdf}")
    return first + trans_index
