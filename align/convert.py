"""Transition-id alignments → senone (pdf-id), phone and HMM-state arrays, phone and word segments.

A Kaldi alignment is one transition-id per 10 ms frame. The transition model of the
alignment dir's ``final.mdl`` maps each transition-id to its pdf-id (the *senone*, the
class a hybrid model's DNN predicts), its phone and its HMM state; ``phones.txt`` names the
phones, with word-position suffixes ``_B _I _E _S`` when the lang is position dependent.

The lookups are :mod:`weakalign.kaldi_steps.transitions`' numpy tables (no
``kaldi_hmm_gmm``); :class:`AlignmentModel` pairs them with the phone names of an alignment
dir and adds what the export needs on top:

- phone segments where Kaldi's ``SplitToPhones`` cuts (after the transition that leaves the
  phone's HMM, plus in *reordered* alignments the self-loops that follow it);
- word segments from the position-dependent phones: a word starts at a ``_B`` or ``_S`` phone
  and ends at an ``_E`` or ``_S`` phone, and they are matched in order to the transcript's
  words; phones without a position suffix (the optional silence ``SIL``) belong to no word;
- the frame reconciliation policy (:func:`reconcile_length`) and Lhotse ``AlignmentItem``s.

>>> m = AlignmentModel.toy()        # phone "a" (id 1) and "SIL" (id 2), one HMM state each
>>> ali = np.array([3, 4, 4, 1, 2, 2, 2, 1, 2])   # SIL (3 frames), a (4), a (2)
>>> m.senones(ali).tolist(), m.kaldi_phones(ali).tolist()
([1, 1, 1, 0, 0, 0, 0, 0, 0], [2, 2, 2, 1, 1, 1, 1, 1, 1])
>>> [(s.phone, s.start, s.num_frames) for s in m.segments(ali)]
[(2, 0, 3), (1, 3, 4), (1, 7, 2)]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from lhotse.supervision import AlignmentItem

from ..kaldi_steps.transitions import (POSITION_SUFFIXES, PhoneTable, TransitionTables, split_to_phones,
                                       strip_position)

log = logging.getLogger("weakalign")

FRAME_SHIFT = 0.01

__all__ = ["AlignmentModel", "Segment", "WordSegment", "word_segments", "reconcile_length", "reconcile_segments",
           "to_alignment_items", "strip_position", "word_position", "FrameMismatchError", "WordAlignmentError"]


def word_position(phone_name: str) -> str | None:
    """The word-position letter ``B``/``I``/``E``/``S`` of a phone name, or ``None``.

    >>> word_position("AH_B"), word_position("SIL")
    ('B', None)
    """
    return phone_name[-1] if phone_name[-2:] in POSITION_SUFFIXES else None


@dataclass(frozen=True)
class Segment:
    """``num_frames`` frames from ``start`` (frame index); ``phone`` is a phones.txt id."""

    phone: int
    start: int
    num_frames: int

    @property
    def end(self) -> int:
        return self.start + self.num_frames


def numbered_phone_table(phone_ids) -> PhoneTable:
    """A :class:`PhoneTable` naming phones by id (``phone<N>``), for dirs without ``phones.txt``."""
    size = max(phone_ids) + 1
    names = np.array(["<eps>"] + [f"phone{i}" if i in set(phone_ids) else "" for i in range(1, size)], dtype=object)
    base_id = np.full(size, -1, dtype=np.int32)
    inventory = ["<eps>"]
    for i in range(1, size):
        if names[i]:
            base_id[i] = len(inventory)
            inventory.append(names[i])
    return PhoneTable(names=names, base_names=names.copy(), base_inventory=inventory, base_id=base_id)


@dataclass
class AlignmentModel:
    """An alignment dir's transition tables (``final.mdl``) and phone names (``phones.txt``)."""

    tables: TransitionTables
    phone_table: PhoneTable

    @classmethod
    def from_dir(cls, ali_dir: str | Path, lang_dir: str | Path | None = None) -> "AlignmentModel":
        """Read ``ali_dir/final.mdl`` and ``ali_dir/phones.txt`` (else ``lang_dir/phones.txt``).

        Without a ``phones.txt`` naming every phone of the model, phones are named by id
        (``phone<N>``) with a warning: senones and phone ids are still right, but there are no
        word positions, hence no word segments.
        """
        ali_dir = Path(ali_dir)
        tables = TransitionTables.from_model_file(ali_dir / "final.mdl")
        model_phones = sorted(set(tables.phone[1:].tolist()))
        candidates = [ali_dir / "phones.txt"] + ([Path(lang_dir) / "phones.txt"] if lang_dir else [])
        for path in candidates:
            if not path.exists():
                continue
            table = PhoneTable.from_phones_txt(path)
            missing = [p for p in model_phones if p >= len(table.names) or not table.names[p]]
            if not missing:
                return cls(tables, table)
            log.warning("%s does not name phones %s of %s; not using it", path, missing[:10], ali_dir / "final.mdl")
        log.warning("%s: no matching phones.txt; phones are named by their ids", ali_dir)
        return cls(tables, numbered_phone_table(model_phones))

    @classmethod
    def toy(cls) -> "AlignmentModel":
        """For examples: phones ``a`` (1) and ``SIL`` (2), one emitting state each; transition-ids
        1, 2 = ``a`` (leave, self-loop), 3, 4 = ``SIL`` (leave, self-loop); pdfs 0 and 1."""
        tables = TransitionTables(
            pdf=np.array([-1, 0, 0, 1, 1]), phone=np.array([-1, 1, 1, 2, 2]), hmm_state=np.array([-1, 0, 0, 0, 0]),
            transition_index=np.array([-1, 1, 0, 1, 0]), is_self_loop=np.array([False, False, True, False, True]),
            is_final=np.array([False, True, False, True, False]), num_pdfs=2,
            transition_state=np.array([0, 1, 1, 2, 2]))
        names = np.array(["<eps>", "a", "SIL"], dtype=object)
        return cls(tables, PhoneTable(names=names, base_names=names.copy(), base_inventory=list(names),
                                      base_id=np.array([-1, 1, 2], dtype=np.int32)))

    @property
    def num_pdfs(self) -> int:
        return int(self.tables.num_pdfs)

    @property
    def num_transition_ids(self) -> int:
        return self.tables.num_transition_ids

    @property
    def base_inventory(self) -> list[str]:
        """Position-independent phone names; index = the ids of :meth:`base_phones` (0 = ``<eps>``)."""
        return self.phone_table.base_inventory

    def check(self, ali: np.ndarray, utt_id: str = "?") -> np.ndarray:
        """``ali`` as an array; ``ValueError`` naming the utterance if it holds ids outside the model."""
        return self.tables.check(ali, utt_id)

    def senones(self, ali: np.ndarray) -> np.ndarray:
        """Pdf-id per frame, as Kaldi's ``ali-to-pdf``."""
        return self.tables.pdfs(ali)

    def kaldi_phones(self, ali: np.ndarray) -> np.ndarray:
        """``phones.txt`` id (with word position) per frame, as ``ali-to-phones --per-frame``."""
        return self.tables.phones(ali)

    def base_phones(self, ali: np.ndarray) -> np.ndarray:
        """Position-independent phone id (index into :attr:`base_inventory`) per frame."""
        return self.phone_table.base_id[self.tables.phones(ali)]

    def hmm_states(self, ali: np.ndarray) -> np.ndarray:
        return self.tables.hmm_states(ali)

    def phone_name(self, phone_id: int, position: bool = True) -> str:
        return self.phone_table.name(phone_id, position)

    def segments(self, ali: np.ndarray, utt_id: str = "?") -> list[Segment]:
        """Phone instances (Kaldi's ``SplitToPhones``; a truncated last phone is kept)."""
        return [Segment(*s) for s in split_to_phones(self.check(ali, utt_id), self.tables)]


@dataclass(frozen=True)
class WordSegment:
    word: str
    start: int
    num_frames: int


class WordAlignmentError(ValueError):
    """The phones' word positions do not fit the transcript (named utterance, reason)."""


def word_segments(segments: Sequence[Segment], model: AlignmentModel, words: Sequence[str],
                  utt_id: str = "?") -> list[WordSegment]:
    """Group position-dependent phone segments into words and label them with the transcript.

    Raises :class:`WordAlignmentError` (naming the utterance) when the phones carry no word
    positions, a word is opened twice or never closed, or the number of words differs from the
    transcript's.

    >>> m = AlignmentModel.toy()
    >>> m.phone_table.names = np.array(["<eps>", "Y_B", "EH_I", "S_E", "SIL", "N_S"], dtype=object)
    >>> segs = [Segment(4, 0, 5), Segment(1, 5, 3), Segment(2, 8, 4), Segment(3, 12, 6), Segment(5, 18, 2)]
    >>> word_segments(segs, m, ["YES", "N"])
    [WordSegment(word='YES', start=5, num_frames=13), WordSegment(word='N', start=18, num_frames=2)]
    """
    spans: list[tuple[int, int]] = []
    open_start: int | None = None
    saw_position = False
    for seg in segments:
        name = model.phone_name(seg.phone)
        pos = word_position(name)
        if pos is None:
            if open_start is not None:
                raise WordAlignmentError(f"{utt_id}: phone {name} without word "
                                         f"position inside a word at frame {seg.start}")
            continue
        saw_position = True
        if pos in "BS":
            if open_start is not None:
                raise WordAlignmentError(f"{utt_id}: a word starts at frame {seg.start} before the previous "
                                         f"one (from frame {open_start}) ended")
            open_start = seg.start
        elif open_start is None:
            raise WordAlignmentError(f"{utt_id}: a _{pos} phone at frame {seg.start} outside a word")
        if pos in "ES":
            spans.append((open_start, seg.end))
            open_start = None
    if not saw_position and segments and words:
        raise WordAlignmentError(f"{utt_id}: phones carry no word positions (_B/_I/_E/_S); "
                                 "word segments need a position-dependent lang")
    if open_start is not None:
        raise WordAlignmentError(f"{utt_id}: the last word (from frame {open_start}) never ends")
    if len(spans) != len(words):
        raise WordAlignmentError(f"{utt_id}: alignment has {len(spans)} words, transcript has {len(words)}")
    return [WordSegment(w, a, b - a) for w, (a, b) in zip(words, spans)]


# --- frame reconciliation ---------------------------------------------------------------------

MAX_FRAME_DIFF = 2


class FrameMismatchError(ValueError):
    """An alignment's length differs from the features' by more than the tolerance."""


def reconcile_length(labels: np.ndarray, num_frames: int, utt_id: str = "?",
                     max_diff: int = MAX_FRAME_DIFF) -> np.ndarray:
    """Make a per-frame label array exactly ``num_frames`` long, **at the end**.

    Policy: a shorter alignment is padded by repeating its last label, a longer one is
    trimmed, both at the end; a difference over ``max_diff`` frames raises
    :class:`FrameMismatchError` naming the utterance. The end is right because the ±1–2
    frames come from framing: with or without ``snip_edges`` frame ``t`` is centred within
    7.5 ms of ``t · 10 ms``, so the two frame sequences agree from the start and differ only
    in how many frames fit at the end.

    >>> reconcile_length(np.array([1, 1, 2]), 5).tolist()
    [1, 1, 2, 2, 2]
    >>> reconcile_length(np.array([1, 1, 2, 3]), 3).tolist()
    [1, 1, 2]
    """
    diff = len(labels) - num_frames
    if abs(diff) > max_diff:
        raise FrameMismatchError(f"{utt_id}: alignment has {len(labels)} frames, features have {num_frames} "
                                 f"(difference {diff:+d} exceeds {max_diff})")
    if diff == 0:
        return labels
    if diff > 0:
        return labels[:num_frames]
    if len(labels) == 0:
        raise FrameMismatchError(f"{utt_id}: empty alignment")
    return np.concatenate([labels, np.full(-diff, labels[-1], dtype=labels.dtype)])


def reconcile_segments(segments: Sequence, ali_frames: int, num_frames: int) -> list:
    """Apply :func:`reconcile_length`'s end-of-utterance policy to segments (``Segment``/``WordSegment``).

    Segments are clipped to ``num_frames``; a segment that ended the alignment (frame
    ``ali_frames``) is stretched to end at ``num_frames``, as the padded labels are.

    >>> reconcile_segments([Segment(1, 0, 3), Segment(2, 3, 2)], 5, 7)
    [Segment(phone=1, start=0, num_frames=3), Segment(phone=2, start=3, num_frames=4)]
    >>> reconcile_segments([Segment(1, 0, 3), Segment(2, 3, 2)], 5, 3)
    [Segment(phone=1, start=0, num_frames=3)]
    """
    out = []
    for seg in segments:
        end = seg.start + seg.num_frames
        if end == ali_frames and num_frames > ali_frames:
            end = num_frames
        end = min(end, num_frames)
        if end > seg.start:
            out.append(_with_frames(seg, end - seg.start))
    return out


def _with_frames(seg, n: int):
    if isinstance(seg, Segment):
        return Segment(seg.phone, seg.start, n)
    return WordSegment(seg.word, seg.start, n)


# --- Lhotse alignment items -------------------------------------------------------------------

def to_alignment_items(segments: Sequence, symbol, offset: float = 0.0, max_end: float | None = None,
                       frame_shift: float = FRAME_SHIFT) -> list[AlignmentItem]:
    """Segments → Lhotse ``AlignmentItem(symbol, start, duration)`` in seconds (relative to the cut start
    plus ``offset``), rounded to 1 µs; the last end is clipped to ``max_end`` (the supervision end)."""
    items = []
    for seg in segments:
        start = offset + seg.start * frame_shift
        end = offset + (seg.start + seg.num_frames) * frame_shift
        if max_end is not None:
            end = min(end, max_end)
        if end - start <= 1e-9:
            continue
        items.append(AlignmentItem(symbol=symbol(seg), start=round(start, 6), duration=round(end - start, 6)))
    return items
