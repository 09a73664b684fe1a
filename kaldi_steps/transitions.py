"""Transition-id lookups with numpy only (no ``kaldi_hmm_gmm``): pdf, phone, HMM state.

A Kaldi alignment is one transition-id per frame. :class:`TransitionTables` turns the
parsed :class:`~weakalign.kaldi_steps.kaldi_io.TransitionModel` of a ``final.mdl`` into
arrays indexed by transition-id (index 0 unused, ``-1``): its pdf-id (senone), phone id,
HMM state, transition index within the state, whether it is a self-loop, and whether it
enters the HMM's final state (Kaldi's ``IsFinal``). :class:`PhoneTable` names phone ids
from ``phones.txt``, with or without the word-position suffix (``_B _I _E _S``).
:func:`split_to_phones` cuts an alignment into phone segments as Kaldi's ``SplitToPhones``.

>>> import numpy as np
>>> t = TransitionTables.from_model_file("/work/shared/fixtures/kaldi_models/mono_model/final.mdl")
>>> ali = np.array([1, 2, 2, 3])
>>> t.pdfs(ali).tolist() == [int(t.pdf[i]) for i in ali]
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

POSITION_SUFFIXES = ("_B", "_I", "_E", "_S")


@dataclass
class TransitionTables:
    """Per transition-id lookups (arrays of length ``num_transition_ids + 1``)."""

    pdf: np.ndarray
    phone: np.ndarray
    hmm_state: np.ndarray
    transition_index: np.ndarray
    is_self_loop: np.ndarray
    is_final: np.ndarray
    num_pdfs: int
    transition_state: np.ndarray | None = None  # 1-based; Kaldi's TransitionIdToTransitionState

    @property
    def num_transition_ids(self) -> int:
        return len(self.pdf) - 1

    @classmethod
    def from_transition_model(cls, tm) -> "TransitionTables":
        """From a parsed :class:`weakalign.kaldi_steps.kaldi_io.TransitionModel`."""
        n = tm.num_transition_ids + 1
        states = tm.id2state
        phone = np.full(n, -1, dtype=np.int32)
        hmm_state = np.full(n, -1, dtype=np.int32)
        phone[1:] = tm.tuples[states[1:] - 1, 0]
        hmm_state[1:] = tm.tuples[states[1:] - 1, 1]
        index = tm.id2index.astype(np.int32).copy()
        index[0] = -1
        is_final = np.zeros(n, dtype=bool)
        for tid in range(1, n):
            entry = tm.topo.for_phone(int(phone[tid]))
            # Kaldi's IsFinal: the transition enters the topology's last (non-emitting) state.
            is_final[tid] = entry[hmm_state[tid]].transitions[index[tid]][0] == len(entry) - 1
        pdf = tm.id2pdf.astype(np.int32).copy()
        pdf[0] = -1
        return cls(pdf=pdf, phone=phone, hmm_state=hmm_state, transition_index=index,
                   is_self_loop=tm.id_is_self_loop.copy(), is_final=is_final, num_pdfs=int(tm.num_pdfs),
                   transition_state=tm.id2state.astype(np.int32).copy())

    @classmethod
    def from_model_file(cls, path: str | os.PathLike) -> "TransitionTables":
        """From a Kaldi ``final.mdl`` (only its transition model is used)."""
        from .kaldi_io import parse_model

        return cls.from_transition_model(parse_model(path).transition_model)

    def check(self, ali: np.ndarray, utt_id: str = "alignment") -> np.ndarray:
        """``ali`` as an array; ``ValueError`` naming ``utt_id`` if it holds ids outside this model."""
        ali = np.asarray(ali)
        if ali.size and (ali.min() < 1 or ali.max() > self.num_transition_ids):
            raise ValueError(f"{utt_id}: transition-ids must be in 1..{self.num_transition_ids} "
                             f"(the model of this alignment dir), got {ali.min()}..{ali.max()}, outside it: wrong final.mdl?")
        return ali

    def pdfs(self, ali: np.ndarray) -> np.ndarray:
        return self.pdf[self.check(ali)]

    def phones(self, ali: np.ndarray) -> np.ndarray:
        return self.phone[self.check(ali)]

    def hmm_states(self, ali: np.ndarray) -> np.ndarray:
        return self.hmm_state[self.check(ali)]


def strip_position(name: str) -> str:
    """``AH0_B`` -> ``AH0``; names without a position suffix are returned as they are."""
    return name[:-2] if name[-2:] in POSITION_SUFFIXES else name


def read_phones_txt(path: str | os.PathLike) -> dict[int, str]:
    names = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'name id', got {line.strip()!r}")
            names[int(fields[1])] = fields[0]
    return names


@dataclass
class PhoneTable:
    """Phone names by id from ``phones.txt``; position-independent phones numbered from 1.

    ``names[id]`` (with suffix), ``base_names[id]`` (without), and ``base_id[id]``: the index
    of the position-independent phone in ``base_inventory`` (``<eps>`` and ``#n`` map to -1).
    """

    names: np.ndarray
    base_names: np.ndarray
    base_inventory: list[str]
    base_id: np.ndarray

    @classmethod
    def from_phones_txt(cls, path: str | os.PathLike) -> "PhoneTable":
        table = read_phones_txt(path)
        size = max(table) + 1
        names = np.array([table.get(i, "") for i in range(size)], dtype=object)
        base_names = np.array([strip_position(n) for n in names], dtype=object)
        inventory = ["<eps>"]
        index = {"<eps>": 0}
        base_id = np.full(size, -1, dtype=np.int32)
        for i in range(size):
            name = names[i]
            if i == 0 or not name or name.startswith("#"):
                continue
            base = base_names[i]
            if base not in index:
                index[base] = len(inventory)
                inventory.append(base)
            base_id[i] = index[base]
        return cls(names=names, base_names=base_names, base_inventory=inventory, base_id=base_id)

    def name(self, phone_id: int, position: bool = True) -> str:
        return (self.names if position else self.base_names)[phone_id]


def is_reordered(ali: np.ndarray, tables: TransitionTables) -> bool:
    """Whether self-loops follow their state's forward transition (Kaldi's default order),
    decided as Kaldi's ``IsReordered`` does from where the self-loops sit."""
    ali = np.asarray(ali)
    if ali.size == 0:
        return False
    if tables.transition_state is not None:
        states = tables.transition_state[ali]
    else:
        states = tables.phone[ali].astype(np.int64) * 100000 + tables.pdf[ali] * 10 + tables.hmm_state[ali]
    loops = tables.is_self_loop[ali]
    change = np.nonzero(states[:-1] != states[1:])[0]
    for i in change:
        if loops[i]:
            return True
        if loops[i + 1]:
            return False
    return bool(loops[0] and not loops[-1])


def split_to_phones(ali: np.ndarray, tables: TransitionTables) -> list[tuple[int, int, int]]:
    """``(phone_id, start_frame, num_frames)`` segments of an alignment (Kaldi's ``SplitToPhones``).

    A phone ends with the transition into its final HMM state, plus in reordered alignments
    the self-loops that follow it.
    """
    ali = tables.check(ali)
    reordered = is_reordered(ali, tables)
    ends = []
    n = len(ali)
    i = 0
    while i < n:
        if tables.is_final[ali[i]]:
            if reordered:
                while i + 1 < n and tables.is_self_loop[ali[i + 1]]:
                    i += 1
            ends.append(i + 1)
        elif i + 1 == n:
            ends.append(n)
        i += 1
    segments, start = [], 0
    for end in ends:
        segments.append((int(tables.phone[ali[start]]), start, end - start))
        start = end
    return segments
