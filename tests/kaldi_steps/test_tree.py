"""Decision-tree building (weakalign.kaldi_steps.tree) on hand-made statistics and on the AN4 slice."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import numpy as np
import pytest

from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model, read_tree, write_tree
from weakalign.kaldi_steps.tree import (TransitionTables, TreeStats, build_tree, cluster_phone_questions,
                                        gauss_objf, split_phones, tree_to_context_dependency)


def _stats(groups, seed=0, n=200, dim=3):
    """TreeStats from {(left, central, right, pdf_class): mean} with unit-variance samples."""
    rng = np.random.default_rng(seed)
    events, feats = [], []
    for event, mean in groups.items():
        events += [list(event)] * n
        feats.append(rng.normal(mean, 1.0, size=(n, dim)))
    return TreeStats.from_frames(np.array(events), np.concatenate(feats))


ONE_ROOT = [([1], True, True)]


def test_objf_matches_kaldi_gauss_clusterable():
    st = _stats({(0, 1, 2, 0): 0.0, (0, 1, 3, 0): 5.0})
    for i in range(len(st)):
        ref = khg.GaussClusterable(st.x[i], st.x2[i], 0.01, st.count[i]).objf()
        assert gauss_objf(st.count[i], st.x[i], st.x2[i]) == pytest.approx(ref, rel=1e-5)


def test_split_separates_two_different_gaussians():
    # Right context 2 or 4 -> mean -3; 3 or 5 -> mean +3. The only useful question is {3, 5}.
    st = _stats({(0, 1, 2, 0): -3.0, (0, 1, 4, 0): -3.0, (0, 1, 3, 0): 3.0, (0, 1, 5, 0): 3.0})
    questions = [[2, 3], [3, 5], [2], [4, 5]]
    tree = build_tree(st, ONE_ROOT, {1: 1}, questions, max_leaves=2, thresh=1.0, cluster_thresh=0.0)
    assert tree.num_leaves == 2
    low = {tree.pdf([0, 1, r], 0) for r in (2, 4)}
    high = {tree.pdf([0, 1, r], 0) for r in (3, 5)}
    assert len(low) == 1 and len(high) == 1 and low != high


def test_thresholds_stop_splitting():
    st = _stats({(0, 1, 2, 0): -3.0, (0, 1, 3, 0): 3.0})
    q = [[2], [3]]
    assert build_tree(st, ONE_ROOT, {1: 1}, q, max_leaves=10, thresh=1e9, cluster_thresh=0.0).num_leaves == 1
    assert build_tree(st, ONE_ROOT, {1: 1}, q, max_leaves=1, thresh=1.0, cluster_thresh=0.0).num_leaves == 1
    assert build_tree(st, ONE_ROOT, {1: 1}, q, max_leaves=10, thresh=1.0, cluster_thresh=0.0).num_leaves == 2


def test_merging_joins_leaves_with_the_same_distribution():
    # Left-context questions can only isolate single phones, so separating the two groups of
    # left contexts takes 3 splits / 4 leaves; merging must join the identical ones back to 2.
    means = {2: -4.0, 3: 4.0, 4: -4.0, 5: 4.0}
    st = _stats({(left, 1, 0, 0): m for left, m in means.items()}, n=400)
    q = [[2], [3], [4], [5]]
    split_only = build_tree(st, ONE_ROOT, {1: 1}, q, max_leaves=4, thresh=0.0, cluster_thresh=0.0)
    assert split_only.num_leaves == 4
    merged = build_tree(st, ONE_ROOT, {1: 1}, q, max_leaves=4, thresh=0.0, cluster_thresh=50.0)
    assert merged.num_leaves == 2
    assert merged.pdf([2, 1, 0], 0) == merged.pdf([4, 1, 0], 0) != merged.pdf([3, 1, 0], 0)
    assert merged.pdf([3, 1, 0], 0) == merged.pdf([5, 1, 0], 0)


def test_unshared_roots_get_one_leaf_per_pdf_class_and_are_not_split():
    st = _stats({(0, 1, 0, k): float(k) for k in range(3)} | {(0, 2, 3, 0): 0.0, (0, 2, 4, 0): 9.0})
    roots = [([1], False, False), ([2], True, True)]
    tree = build_tree(st, roots, {1: 3, 2: 1}, [[3], [4]], max_leaves=10, thresh=1.0, cluster_thresh=0.0)
    assert len({tree.pdf([0, 1, 0], k) for k in range(3)}) == 3
    assert tree.pdf([0, 2, 3], 0) != tree.pdf([0, 2, 4], 0)
    assert tree.num_leaves == 5


def test_cluster_phone_questions_groups_similar_phones():
    st = _stats({(0, p, 0, 1): m for p, m in {2: -5.0, 3: -5.2, 4: 5.0, 5: 5.1}.items()})
    questions = cluster_phone_questions(st, [[2], [3], [4], [5]], pdf_classes=(1,))
    assert [2, 3] in questions and [4, 5] in questions


def test_tree_round_trips_through_kaldi_files(tmp_path):
    st = _stats({(left, c, right, k): float(left + 2 * right + 3 * k + c)
                 for left in (0, 2, 3) for c in (2, 3) for right in (0, 2, 3) for k in range(3)}, n=30)
    roots = [([2], True, True), ([3], True, True)]
    tree = build_tree(st, roots, {2: 3, 3: 3}, [[2], [3], [0]], max_leaves=30, thresh=10.0)
    assert 6 < tree.num_leaves <= 30
    write_tree(tmp_path / "tree", tree_to_context_dependency(tree))
    ctx = read_tree(tmp_path / "tree")
    assert (ctx.context_width, ctx.central_position, ctx.num_pdfs) == (3, 1, tree.num_leaves)
    for left in (0, 2, 3):
        for c in (2, 3):
            for right in (0, 2, 3):
                for k in range(3):
                    assert ctx.compute([left, c, right], k) == (True, tree.pdf([left, c, right], k))


def test_slice_tri1_tree_and_converted_alignments(an4_slice_tri1):
    """The slice's tri1 tree maps each aligned frame's (context, state) to the frame's pdf."""
    ws = an4_slice_tri1
    tm, am = read_model(ws.exp / "tri1" / "final.mdl")
    ctx = read_tree(ws.exp / "tri1" / "tree")
    assert ctx.num_pdfs == tm.num_pdfs == am.num_pdfs > 50
    tables = TransitionTables(tm)
    mono_tables = TransitionTables(read_model(ws.exp / "mono" / "final.mdl")[0])
    mono = read_ali_dir(ws.exp / "mono")
    checked = 0
    for utt, ali in sorted(read_ali_dir(ws.exp / "tri1").items())[:10]:
        phones, starts = split_phones(ali, tables)
        lengths = np.diff(np.append(starts, len(ali)))
        padded = np.concatenate([[0], phones, [0]])
        for i, (s, n) in enumerate(zip(starts, lengths)):
            for t in range(s, s + n):
                tid = int(ali[t])
                assert ctx.compute([int(padded[i]), int(phones[i]), int(padded[i + 2])],
                                   int(tables.hmm_state[tid])) == (True, int(tables.pdf[tid]))
                checked += 1
        # The monophone alignment of the same utterance has the same number of frames.
        assert len(mono[utt]) == len(ali)
        split_phones(mono[utt], mono_tables)
    assert checked > 1000


def test_convert_alignment_keeps_phones_and_states_with_new_pdfs(an4_slice_tri1):
    from weakalign.kaldi_steps.tree import convert_alignment

    ws = an4_slice_tri1
    mono_tm = read_model(ws.exp / "mono" / "final.mdl")[0]
    tri_tm = read_model(ws.exp / "tri1" / "final.mdl")[0]
    ctx = read_tree(ws.exp / "tri1" / "tree")
    old, new = TransitionTables(mono_tm), TransitionTables(tri_tm)
    for utt, ali in sorted(read_ali_dir(ws.exp / "mono").items())[:10]:
        conv = convert_alignment(ali, old, new, ctx)
        assert len(conv) == len(ali)
        assert (new.phone[conv] == old.phone[ali]).all()
        assert (new.hmm_state[conv] == old.hmm_state[ali]).all()
        assert (new.is_self_loop[conv] == old.is_self_loop[ali]).all()
        phones, starts = split_phones(conv, new)
        padded = np.concatenate([[0], phones, [0]])
        idx = np.searchsorted(starts, np.arange(len(conv)), side="right") - 1
        for t in range(len(conv)):
            i = idx[t]
            window = [int(padded[i]), int(phones[i]), int(padded[i + 2])]
            assert ctx.compute(window, int(new.hmm_state[conv[t]])) == (True, int(new.pdf[conv[t]]))
