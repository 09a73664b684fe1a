"""Transition-id → senone/phone/state conversion, phone and word segments, frame reconciliation.

The reference is ``kaldi_hmm_gmm.TransitionModel`` (Kaldi's own C++), built from the real
Kaldi-written models' ``tree`` and topology. The lookups are ``kaldi_steps.transitions``'
tables (tests/kaldi_steps/ checks the parsed pdf/phone per transition-id); this extends that to
what the export reads from an alignment dir — ``AlignmentModel.from_dir``: pdf, phone, HMM
state, final and self-loop flags of every transition-id, phone names, and phone segments.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import numpy as np
import pytest

from weakalign.align.convert import (AlignmentModel, FrameMismatchError, Segment, WordAlignmentError,
                                     reconcile_length, reconcile_segments, strip_position, word_segments)
from weakalign.kaldi_steps.transitions import is_reordered
from weakalign.kaldi_steps.kaldi_io import parse_model, read_model, read_tree, topology_to_khg

MODELS = ["mono_model", "acoustic_g2p_output_model"]


def khg_reference(model_dir):
    """khg's TransitionModel built from the dir's tree + topology (not from our parsed tuples)."""
    parsed = parse_model(model_dir / "final.mdl").transition_model
    return khg.TransitionModel(read_tree(model_dir / "tree"), topology_to_khg(parsed.topo))


@pytest.mark.parametrize("name", MODELS)
def test_tables_agree_with_khg_for_every_transition_id(kaldi_models_dir, name):
    model_dir = kaldi_models_dir / name
    model = AlignmentModel.from_dir(model_dir)
    tables = model.tables
    for ref in (khg_reference(model_dir), read_model(model_dir / "final.mdl")[0]):
        n = ref.num_transition_ids
        assert tables.num_transition_ids == n and tables.num_pdfs == ref.num_pdfs
        tuples = [t.__getstate__() for t in ref.tuples]  # (phone, hmm_state, forward_pdf, self_loop_pdf)
        for tid in range(1, n + 1):
            state = tuples[ref.id2state[tid] - 1]
            assert tables.pdf[tid] == ref.transition_id_to_pdf(tid), tid
            assert tables.phone[tid] == ref.transition_id_to_phone(tid) == state[0], tid
            assert tables.hmm_state[tid] == state[1], tid
            assert tables.is_final[tid] == ref.is_final(tid), tid
            assert tables.is_self_loop[tid] == ref.is_self_loop(tid), tid
        assert np.array_equal(model.senones(np.arange(1, n + 1)), np.array(ref.transition_id_to_pdf_array())[1:])


def test_phone_names_come_from_the_dirs_phones_txt(kaldi_models_dir):
    model = AlignmentModel.from_dir(kaldi_models_dir / "acoustic_g2p_output_model")
    assert model.phone_name(1) == "sil" and model.phone_name(2) == "spn"
    assert model.base_inventory[0] == "<eps>" and model.base_inventory[model.phone_table.base_id[1]] == "sil"
    # the monophone model has no phones.txt: phones get numeric names, ids stay right
    mono = AlignmentModel.from_dir(kaldi_models_dir / "mono_model")
    for p in set(mono.tables.phone[1:].tolist()):
        assert mono.phone_name(p) == f"phone{p}" and mono.base_inventory[mono.base_phones(
            np.array([np.flatnonzero(mono.tables.phone == p)[0]]))[0]] == f"phone{p}"


def walk_phone(topo, tid_of, phone, rng, reordered):
    """Transition-ids of one random left-to-right walk through ``phone``'s HMM, each visited state
    emitting 1..4 frames, in Kaldi's plain or reordered (self-loops after the forward transition) order."""
    entry = topo.for_phone(phone)
    final = len(entry) - 1
    out, state = [], 0
    while True:
        transitions = entry[state].transitions
        loops = [k for k, (dst, _) in enumerate(transitions) if dst == state]
        forward = [k for k, (dst, _) in enumerate(transitions) if dst > state]
        k = forward[rng.integers(len(forward))]
        t_out = tid_of[(phone, state, k)]
        n_loops = int(rng.integers(0, 4)) if loops else 0
        t_loops = [tid_of[(phone, state, loops[0])]] * n_loops
        out += [t_out] + t_loops if reordered else t_loops + [t_out]
        state = transitions[k][0]
        if state == final:
            return out


@pytest.mark.parametrize("reordered", [True, False])
def test_phone_segments_recover_random_walks_through_real_topologies(kaldi_models_dir, reordered):
    model_dir = kaldi_models_dir / "mono_model"
    model = AlignmentModel.from_dir(model_dir)
    tables = model.tables
    parsed = parse_model(model_dir / "final.mdl").transition_model
    tid_of = {(int(tables.phone[t]), int(tables.hmm_state[t]), int(parsed.id2index[t])): t
              for t in range(1, tables.num_transition_ids + 1)}
    ref = khg_reference(model_dir)
    rng = np.random.default_rng(0)
    phones = sorted(set(tables.phone[1:].tolist()))
    # includes silence-like phones with 5-state topologies, and a phone repeated back to back
    sequence = [int(p) for p in rng.choice(phones, 40)] + [phones[3], phones[3]]
    ali, truth, start = [], [], 0
    for p in sequence:
        tids = walk_phone(parsed.topo, tid_of, p, rng, reordered)
        truth.append(Segment(p, start, len(tids)))
        ali += tids
        start += len(tids)
    ali = np.array(ali, dtype=np.int32)
    assert model.segments(ali) == truth
    assert all(ref.transition_ids_is_start_of_phone(int(ali[s.start])) for s in truth)
    if not reordered:
        assert all(ref.is_final(int(ali[s.end - 1])) for s in truth)
    assert is_reordered(ali, tables) == reordered


def test_out_of_range_transition_ids_name_the_utterance():
    with pytest.raises(ValueError, match="utt7: transition-ids must be in 1..4"):
        AlignmentModel.toy().segments(np.array([1, 2, 9]), "utt7")


@pytest.mark.parametrize("diff", [-2, -1, 1, 2])
def test_reconcile_pads_or_trims_at_the_end_within_two_frames(diff):
    labels = np.array([4, 4, 7, 7, 7, 9], dtype=np.int32)
    out = reconcile_length(labels, len(labels) - diff, "u1")
    assert len(out) == len(labels) - diff and out.dtype == np.int32
    if diff > 0:
        assert out.tolist() == labels[:len(labels) - diff].tolist()
    else:
        assert out.tolist() == labels.tolist() + [9] * (-diff)


@pytest.mark.parametrize("diff", [-3, 3, 10])
def test_reconcile_rejects_larger_mismatches_naming_the_utterance(diff):
    with pytest.raises(FrameMismatchError, match=r"an4-utt-9: alignment has 6 frames, features have"):
        reconcile_length(np.arange(6), 6 - diff, "an4-utt-9")


def test_reconciled_segments_match_reconciled_labels():
    segs = [Segment(1, 0, 3), Segment(2, 3, 2), Segment(5, 5, 4)]
    labels = np.repeat([1, 2, 5], [3, 2, 4])
    for n in (7, 8, 9, 10, 11):
        out = reconcile_segments(segs, 9, n)
        assert np.array_equal(np.repeat([s.phone for s in out], [s.num_frames for s in out]),
                              reconcile_length(labels, n))


NAMES = ["<eps>", "SIL", "Y_B", "EH_I", "S_E", "N_B", "OW_E", "SPN_S", "AH"]


def tables_with_names(names):
    model = AlignmentModel.toy()
    model.phone_table.names = np.array(names, dtype=object)
    return model


def test_word_segments_from_positions_with_silence_and_unk():
    segs = [Segment(1, 0, 10), Segment(2, 10, 5), Segment(3, 15, 8), Segment(4, 23, 6), Segment(1, 29, 4),
            Segment(5, 33, 5), Segment(6, 38, 9), Segment(7, 47, 12), Segment(1, 59, 20)]
    words = word_segments(segs, tables_with_names(NAMES), ["YES", "NO", "BLAH"], "u")
    assert [(w.word, w.start, w.num_frames) for w in words] == [("YES", 10, 19), ("NO", 33, 14), ("BLAH", 47, 12)]


def test_word_segments_reject_mismatches_naming_the_utterance():
    t = tables_with_names(NAMES)
    segs = [Segment(2, 0, 5), Segment(4, 5, 5)]
    with pytest.raises(WordAlignmentError, match="u3: alignment has 1 words, transcript has 2"):
        word_segments(segs, t, ["YES", "NO"], "u3")
    with pytest.raises(WordAlignmentError, match="u4: the last word"):
        word_segments(segs[:1], t, ["YES"], "u4")
    with pytest.raises(WordAlignmentError, match="u5: phones carry no word positions"):
        word_segments([Segment(8, 0, 3)], t, ["A"], "u5")


def test_strip_position():
    assert [strip_position(n) for n in ("AH0_B", "SIL_S", "SIL", "B_I")] == ["AH0", "SIL", "SIL", "B"]
