"""Best paths over Kaldi's scoring grid from state-level lattices (``kaldi_steps/lattice.py``),
against every path enumerated by brute force on random acyclic lattices."""

import itertools

import numpy as np
import pytest

from weakalign.kaldi_steps import lattice as lattice_mod
from weakalign.kaldi_steps.lattice import RawLattice, grid_best_paths

POINTS = [(w, p) for w in (7, 10, 13, 17) for p in (0.0, 0.5, 1.0)]


def random_lattice(rng, n_states=9) -> RawLattice:
    """An acyclic lattice whose state numbers are shuffled (a decoder's are not in topological
    order either), with epsilon and word arcs, and one or two final states."""
    perm = rng.permutation(n_states)
    src, dst = [], []
    for a in range(n_states - 1):
        for b in rng.choice(np.arange(a + 1, n_states), size=min(2, n_states - 1 - a), replace=False):
            src.append(perm[a]), dst.append(perm[b])
    n = len(src)
    finals = [perm[-1]] + ([perm[-2]] if rng.random() < 0.5 else [])
    return RawLattice(start=int(perm[0]), num_states=n_states, src=np.array(src), dst=np.array(dst),
                      olabel=np.where(rng.random(n) < 0.5, rng.integers(1, 6, n), 0),
                      graph=rng.uniform(-1, 4, n), acoustic=rng.uniform(-20, 60, n),
                      final_state=np.array(finals), final_graph=rng.uniform(0, 1, len(finals)),
                      final_acoustic=rng.uniform(0, 5, len(finals)))


def every_path(lat: RawLattice):
    """(words, graph, acoustic) of every start-to-final path, by depth-first enumeration."""
    out = []

    def walk(state, arcs):
        for f, g, a in zip(lat.final_state, lat.final_graph, lat.final_acoustic):
            if f == state:
                words = tuple(int(lat.olabel[k]) for k in arcs if lat.olabel[k])
                out.append((words, lat.graph[arcs].sum() + g, lat.acoustic[arcs].sum() + a))
        for k in np.nonzero(lat.src == state)[0]:
            walk(lat.dst[k], arcs + [k])

    walk(lat.start, [])
    return out


def test_grid_best_paths_are_the_cheapest_of_all_paths_at_every_point():
    rng = np.random.default_rng(0)
    lattices = [random_lattice(rng, n) for n in itertools.islice(itertools.cycle([5, 8, 11]), 12)]
    found = grid_best_paths(lattices, POINTS)
    for lat, row in zip(lattices, found):
        paths = every_path(lat)
        for (w, p), got in zip(POINTS, row):
            def cost(words, g, a):
                return g + a / w + p * len(words)
            best = min(cost(*x) for x in paths)
            # Within the tie-break's nudge (TIE_BREAK per unit of word id).
            assert got is not None and cost(got.words, got.graph, got.acoustic) == pytest.approx(best, abs=1e-4)
            assert (got.words, pytest.approx(got.graph), pytest.approx(got.acoustic)) in paths


def test_passes_of_few_arcs_find_what_one_pass_finds(monkeypatch):
    rng = np.random.default_rng(1)
    lattices = [random_lattice(rng, 10) for _ in range(7)]
    one = grid_best_paths(lattices, POINTS)
    monkeypatch.setattr(lattice_mod, "ARCS_PER_PASS", 20)
    assert grid_best_paths(lattices, POINTS) == one


def test_no_final_state_and_cycles():
    lat = RawLattice(start=0, num_states=2, src=np.array([0]), dst=np.array([1]), olabel=np.array([3]),
                     graph=np.array([1.0]), acoustic=np.array([2.0]), final_state=np.array([], dtype=np.int64),
                     final_graph=np.array([]), final_acoustic=np.array([]))
    assert grid_best_paths([lat], POINTS[:2]) == [[None, None]]
    cyclic = RawLattice(start=0, num_states=2, src=np.array([0, 1]), dst=np.array([1, 0]), olabel=np.array([0, 0]),
                        graph=np.zeros(2), acoustic=np.zeros(2), final_state=np.array([1]),
                        final_graph=np.zeros(1), final_acoustic=np.zeros(1))
    with pytest.raises(ValueError, match="cycle"):
        grid_best_paths([cyclic], POINTS[:1])


def test_tied_paths_go_to_the_smaller_word_ids_as_in_kaldi():
    """Homophones through the same states (AN4's O and OH) tie exactly; Kaldi keeps the smaller word id."""
    for first, second in ((62, 59), (59, 62)):
        lat = RawLattice(start=0, num_states=3, src=np.array([0, 0, 1]), dst=np.array([1, 1, 2]),
                         olabel=np.array([first, second, 0]), graph=np.array([1.0, 1.0, 0.5]),
                         acoustic=np.array([30.0, 30.0, 4.0]), final_state=np.array([2]),
                         final_graph=np.array([0.0]), final_acoustic=np.array([0.0]))
        assert [p.words for p in grid_best_paths([lat], POINTS)[0]] == [(59,)] * len(POINTS)


def test_the_binary_lattice_reader_keeps_the_float32_weights(tmp_path):
    """A lattice written by kaldifst and read back from OpenFst's binary form: every arc and final
    weight exactly, where the text form keeps 6 digits."""
    import kaldifst

    lat = kaldifst.Lattice()
    for _ in range(3):
        lat.add_state()
    lat.start = 0
    lat.add_arc(0, kaldifst.LatticeArc(3, 0, kaldifst.LatticeWeight(0.1234567, 1234.5678), 1))
    lat.add_arc(0, kaldifst.LatticeArc(4, 9, kaldifst.LatticeWeight(-0.5, 2.0), 2))
    lat.add_arc(1, kaldifst.LatticeArc(5, 7, kaldifst.LatticeWeight(0.25, 3.0), 2))
    lat.set_final(2, kaldifst.LatticeWeight(0.75, 0.0))
    got = RawLattice.from_kaldifst(lat, acoustic_scale=0.5)
    assert (got.start, got.num_states) == (0, 3)
    assert got.src.tolist() == [0, 0, 1] and got.dst.tolist() == [1, 2, 2] and got.olabel.tolist() == [0, 9, 7]
    assert got.graph.tolist() == [float(np.float32(0.1234567)), -0.5, 0.25]
    assert got.acoustic.tolist() == [float(np.float32(1234.5678)) / 0.5, 4.0, 6.0]
    assert got.final_state.tolist() == [2] and got.final_graph.tolist() == [0.75]
    with pytest.raises(ValueError, match="OpenFst"):
        RawLattice.from_openfst_bytes(b"\0" * 64, 1.0)
