"""Kaldi parity report: how closely two alignment dirs agree (``weakalign kaldi-parity A B``).

Both dirs are Kaldi alignment dirs (``final.mdl`` + ``ali.*.gz`` [+ ``tree``, ``phones.txt``]);
``B`` is meant to be the reference (real Kaldi's). Over the utterances both hold it measures:

- **frame agreement** of phones, per 10 ms frame, with the word-position markers (``_B _I _E
  _S``) stripped (the headline) and kept; of pdf-ids only when the two ``tree`` files are the
  same tree (else pdf-ids name different clusters and are not compared, and the report says so);
- **phone-sequence agreement**: % of utterances with the same sequence of phones, markers
  stripped, with and without the optional silence;
- **matched phone boundaries**: the phone segments (Kaldi's ``SplitToPhones``) of the two
  sequences are matched with ``difflib`` on their marker-free names, and the onsets of matched
  segments are compared (onsets at frame 0 in both are left out: they always agree). The
  *signed* difference is **B − A**: positive means the B dir's (Kaldi's) boundaries are later;
- **pronunciation variants**: words are cut from the phones' word-position markers; where
  both dirs have the same number of words the k-th words are compared, and an utterance
  counts when some word got a different pronunciation (``ONE: W AH N vs HH W AH N``; words
  are named from a Kaldi ``text`` file when one is given, else by position ``#k``).

Utterances only one dir holds are counted (and a few named), not silently dropped. Utterance
ids match exactly or, when none do, as ``<speaker>-<id>`` on one side and ``<id>`` on the
other (Kaldi data dirs of AN4 prefix the speaker; see ``weakalign.align.kaldi_data``).

>>> match_utterance_ids(["an1-fash-b"], ["fash-an1-fash-b", "fash-an2-fash-b"])
({'an1-fash-b': 'fash-an1-fash-b'}, 'B ids are <prefix>-<A id>')
>>> onset_differences([("SIL", 0, 5), ("W", 5, 3), ("AH", 8, 4)], [("SIL", 0, 6), ("W", 6, 3), ("AH", 9, 3)])
[1, 1]
>>> word_pronunciations(["SIL", "W_B", "AH_I", "N_E", "SIL", "T_B", "UW_E"])
[('W', 'AH', 'N'), ('T', 'UW')]
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..align.convert import AlignmentModel, word_position
from .kaldi_io import parse_tree, read_ali_dir, tree_to_bytes
from .transitions import strip_position

FRAME_SHIFT_MS = 10
SIGN_CONVENTION = "signed differences are B - A: positive = the B (Kaldi) dir's boundaries are later"
EXAMPLES = 5


@dataclass
class AlignmentDir:
    """One alignment dir: its transition tables + phone names, alignments and tree (if any)."""

    path: Path
    model: AlignmentModel
    alignments: dict[str, np.ndarray]
    tree: bytes | None

    @classmethod
    def load(cls, path: str | os.PathLike, lang_dir: str | os.PathLike | None = None) -> "AlignmentDir":
        path = Path(path)
        if not (path / "final.mdl").exists():
            raise FileNotFoundError(f"{path}: no final.mdl (not a Kaldi alignment dir)")
        tree_path = path / "tree"
        # Compare trees in one canonical serialisation (a text and a binary tree can be the same tree).
        tree = tree_to_bytes(parse_tree(tree_path)) if tree_path.exists() else None
        return cls(path, AlignmentModel.from_dir(path, lang_dir), read_ali_dir(path), tree)

    def phone_names(self, ali: np.ndarray) -> list[str]:
        """Phone name (with its word-position marker) per frame."""
        return self.model.phone_table.names[self.model.kaldi_phones(ali)].tolist()

    def segments(self, ali: np.ndarray, utt_id: str) -> list[tuple[str, int, int]]:
        """``(phone name with marker, start frame, frames)`` per phone instance."""
        return [(self.model.phone_name(s.phone), s.start, s.num_frames) for s in self.model.segments(ali, utt_id)]


# --- utterance ids and transcripts -------------------------------------------------------------

def _without_prefix(utt_id: str) -> str:
    return utt_id.split("-", 1)[1] if "-" in utt_id else utt_id


def match_utterance_ids(ids_a, ids_b) -> tuple[dict[str, str], str]:
    """A's id -> B's id for the utterances both hold, and how the ids were matched: exactly, or
    (only when no id matches exactly) one side's ids as ``<prefix>-<the other side's id>``."""
    ids_a, ids_b = list(ids_a), list(ids_b)
    common = set(ids_a) & set(ids_b)
    if common:
        return {u: u for u in ids_a if u in common}, "exact"
    b_by_suffix = {_without_prefix(u): u for u in ids_b}
    a_to_b = {u: b_by_suffix[u] for u in ids_a if u in b_by_suffix}
    if a_to_b:
        return a_to_b, "B ids are <prefix>-<A id>"
    a_by_suffix = {_without_prefix(u): u for u in ids_a}
    b_to_a = {u: a_by_suffix[u] for u in ids_b if u in a_by_suffix}
    return {a: b for b, a in b_to_a.items()}, ("A ids are <prefix>-<B id>" if b_to_a else "none match")


def read_kaldi_text(path: str | os.PathLike) -> dict[str, list[str]]:
    """A Kaldi ``text`` file: ``utt WORD WORD ...`` per line, read as ``prepare`` reads a corpus'
    (:func:`weakalign.pipeline.corpora.kaldi_dir.read_table`: a repeated id's later lines are ignored)."""
    from weakalign.pipeline.corpora.kaldi_dir import read_table
    from weakalign.pipeline.report import SkipReport

    table = read_table(Path(path), SkipReport("kaldi-parity"))
    return {utt: words.split() for utt, words in table.values.items()}


def transcripts_for(pairs: dict[str, str], text: dict[str, list[str]]) -> dict[str, list[str]]:
    """A's id -> words, from a text keyed by A's ids or by B's (whichever covers more)."""
    by_a = {a: text[a] for a in pairs if a in text}
    by_b = {a: text[b] for a, b in pairs.items() if b in text}
    return by_a if len(by_a) >= len(by_b) else by_b


# --- frame agreement ---------------------------------------------------------------------------

def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def frame_agreement(a: AlignmentDir, b: AlignmentDir, pairs: dict[str, str], top: int) -> dict:
    """Per-frame agreement of phones (markers stripped / kept) and, with the same tree, of pdf-ids,
    over the first min(len A, len B) frames of each utterance; the most frequent phone confusions."""
    same_tree = a.tree is not None and a.tree == b.tree
    frames = base_same = full_same = pdf_same = length_mismatch = 0
    confusions: Counter = Counter()
    for ua, ub in pairs.items():
        ali_a, ali_b = a.alignments[ua], b.alignments[ub]
        n = min(len(ali_a), len(ali_b))
        length_mismatch += len(ali_a) != len(ali_b)
        names_a, names_b = a.phone_names(ali_a[:n]), b.phone_names(ali_b[:n])
        frames += n
        for x, y in zip(names_a, names_b):
            full_same += x == y
            if strip_position(x) == strip_position(y):
                base_same += 1
            else:
                confusions[f"{strip_position(x)}->{strip_position(y)}"] += 1
        if same_tree:
            pdf_same += int(np.sum(a.model.senones(ali_a[:n]) == b.model.senones(ali_b[:n])))
    return {
        "frames": frames,
        "length_mismatch_utterances": length_mismatch,
        "phones_pct": _percent(base_same, frames),
        "phones_with_position_pct": _percent(full_same, frames),
        "pdfs_pct": _percent(pdf_same, frames) if same_tree else None,
        "pdfs_note": "same tree" if same_tree else "not compared: the two dirs have different trees "
                                                   "(or no tree), so their pdf-ids are not the same clusters",
        "top_confusions_a_to_b": [f"{k}:{c}" for k, c in confusions.most_common(top)],
    }


# --- phone sequences and boundaries ------------------------------------------------------------

def base_sequence(segments, drop: frozenset = frozenset()) -> list[str]:
    """Marker-free phone names of the segments, leaving out those named in ``drop``."""
    return [name for name in (strip_position(s[0]) for s in segments) if name not in drop]


def onset_differences(segs_a, segs_b) -> list[int]:
    """Onset of B minus onset of A (frames) for the phone segments ``difflib`` matches on their
    marker-free names; a pair starting at frame 0 in both is left out (it cannot disagree)."""
    names_a, names_b = base_sequence(segs_a), base_sequence(segs_b)
    matcher = difflib.SequenceMatcher(a=names_a, b=names_b, autojunk=False)
    diffs = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            start_a, start_b = segs_a[block.a + k][1], segs_b[block.b + k][1]
            if start_a or start_b:
                diffs.append(start_b - start_a)
    return diffs


def boundary_stats(diffs: list[int]) -> dict:
    """Mean absolute / signed onset difference in ms and the shares within 10 and 20 ms."""
    d = np.asarray(diffs, dtype=np.int64)
    n = len(d)
    if not n:
        return {"n": 0}
    return {
        "n": n,
        "mean_abs_ms": round(float(np.abs(d).mean()) * FRAME_SHIFT_MS, 2),
        "mean_signed_ms": round(float(d.mean()) * FRAME_SHIFT_MS, 2),
        "pct_exact": _percent(int(np.sum(d == 0)), n),
        "pct_within_10ms": _percent(int(np.sum(np.abs(d) * FRAME_SHIFT_MS <= 10)), n),
        "pct_within_20ms": _percent(int(np.sum(np.abs(d) * FRAME_SHIFT_MS <= 20)), n),
        "pct_b_later": _percent(int(np.sum(d > 0)), n),
        "pct_b_earlier": _percent(int(np.sum(d < 0)), n),
    }


# --- pronunciations ----------------------------------------------------------------------------

def word_pronunciations(phone_names: list[str]) -> list[tuple[str, ...]] | None:
    """Marker-free pronunciations of the words, in order, cut at the word-position markers
    (a word is ``_B _I* _E`` or ``_S``; unmarked phones, the optional silence, are between words).
    ``None`` when the markers do not form words (a position-independent lang)."""
    words, current = [], None
    for name in phone_names:
        pos = word_position(name)
        if pos is None:
            if current is not None:
                return None
            continue
        if (pos in "BS") != (current is None):
            return None
        current = (current or []) + [strip_position(name)]
        if pos in "ES":
            words.append(tuple(current))
            current = None
    return None if current is not None else words


@dataclass
class PronunciationTally:
    """Word-by-word pronunciation comparison over utterances."""

    utterances_compared: int = 0
    utterances_different: int = 0
    words_compared: int = 0
    words_different: int = 0
    word_count_mismatch: int = 0
    unparsable: int = 0

    def __post_init__(self):
        self.pairs: Counter = Counter()
        self.examples: list[str] = []

    def add(self, utt_id: str, prons_a, prons_b, words: list[str] | None) -> None:
        if prons_a is None or prons_b is None:
            self.unparsable += 1
            return
        if len(prons_a) != len(prons_b):
            self.word_count_mismatch += 1
            return
        if words is None or len(words) != len(prons_a):
            words = [f"#{k + 1}" for k in range(len(prons_a))]
        self.utterances_compared += 1
        self.words_compared += len(prons_a)
        different = [(w, pa, pb) for w, pa, pb in zip(words, prons_a, prons_b) if pa != pb]
        self.words_different += len(different)
        if different:
            self.utterances_different += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(utt_id)
        for w, pa, pb in different:
            self.pairs[f"{w}: {' '.join(pa)} vs {' '.join(pb)}"] += 1

    def report(self, top: int) -> dict:
        return {
            "utterances_compared": self.utterances_compared,
            "utterances_different": self.utterances_different,
            "utterances_different_pct": _percent(self.utterances_different, self.utterances_compared),
            "words_compared": self.words_compared,
            "words_different": self.words_different,
            "word_count_mismatch_utterances": self.word_count_mismatch,
            "unparsable_utterances": self.unparsable,
            "top_pairs_a_vs_b": [f"{k} ({c})" for k, c in self.pairs.most_common(top)],
            "example_utterances": self.examples,
        }


# --- the report --------------------------------------------------------------------------------

def _optional_silence(lang_dir) -> frozenset:
    """The optional-silence phone(s) to drop for the 'without silence' figures: the lang's, else SIL."""
    path = Path(lang_dir) / "phones" / "optional_silence.txt" if lang_dir else None
    if path is not None and path.exists():
        return frozenset(path.read_text().split())
    return frozenset({"SIL"})


def sequences_boundaries_pronunciations(a: AlignmentDir, b: AlignmentDir, pairs: dict[str, str],
                                        transcripts: dict[str, list[str]], silence: frozenset, top: int) -> dict:
    """Phone-sequence agreement, matched-boundary statistics and the pronunciation tally."""
    same_seq = same_seq_no_sil = 0
    diffs: list[int] = []
    tally = PronunciationTally()
    segments_a = segments_b = 0
    for ua, ub in pairs.items():
        segs_a, segs_b = a.segments(a.alignments[ua], ua), b.segments(b.alignments[ub], ub)
        segments_a, segments_b = segments_a + len(segs_a), segments_b + len(segs_b)
        same_seq += base_sequence(segs_a) == base_sequence(segs_b)
        same_seq_no_sil += base_sequence(segs_a, silence) == base_sequence(segs_b, silence)
        diffs += onset_differences(segs_a, segs_b)
        tally.add(ua, word_pronunciations([s[0] for s in segs_a]), word_pronunciations([s[0] for s in segs_b]),
                  transcripts.get(ua))
    n = len(pairs)
    return {
        "phone_segments": {"a": segments_a, "b": segments_b},
        "phone_sequence": {"same_pct": _percent(same_seq, n), "same_without_silence_pct": _percent(same_seq_no_sil, n),
                           "silence_dropped": sorted(silence), "position_markers": "stripped"},
        "boundaries": boundary_stats(diffs),
        "pronunciations": tally.report(top),
    }


def kaldi_parity(ali_dir: str | os.PathLike, kaldi_ali_dir: str | os.PathLike, *,
                 lang_dir: str | os.PathLike | None = None, text: str | os.PathLike | None = None,
                 top: int = 10) -> dict:
    """The parity report (a JSON-able dict) of alignment dir A = ``ali_dir`` against
    B = ``kaldi_ali_dir``; see the module docstring. ``lang_dir`` supplies ``phones.txt`` where a dir
    has none, and the optional silence; ``text`` (Kaldi ``text``) names the words."""
    a, b = AlignmentDir.load(ali_dir, lang_dir), AlignmentDir.load(kaldi_ali_dir, lang_dir)
    pairs, how = match_utterance_ids(sorted(a.alignments), sorted(b.alignments))
    if not pairs:
        raise ValueError(f"{ali_dir} and {kaldi_ali_dir} have no utterance in common")
    matched_b = set(pairs.values())
    only_a = sorted(set(a.alignments) - set(pairs))
    only_b = sorted(set(b.alignments) - matched_b)
    transcripts = transcripts_for(pairs, read_kaldi_text(text)) if text else {}
    report = {
        "a": str(a.path), "b": str(b.path), "frame_shift_ms": FRAME_SHIFT_MS, "sign_convention": SIGN_CONVENTION,
        "utterances": {"a": len(a.alignments), "b": len(b.alignments), "common": len(pairs), "ids_matched": how,
                       "only_in_a": len(only_a), "only_in_b": len(only_b),
                       "only_in_a_examples": only_a[:EXAMPLES], "only_in_b_examples": only_b[:EXAMPLES],
                       "with_transcript": len(transcripts)},
        "frame_agreement": frame_agreement(a, b, pairs, top),
    }
    report.update(sequences_boundaries_pronunciations(a, b, pairs, transcripts, _optional_silence(lang_dir), top))
    return report


def format_parity_table(report: dict) -> str:
    """The report as a two-column text table for people."""
    u, f, s, bd, p = (report[k] for k in ("utterances", "frame_agreement", "phone_sequence", "boundaries",
                                          "pronunciations"))
    pdfs = f"{f['pdfs_pct']} %" if f["pdfs_pct"] is not None else "n/a (different trees)"
    rows = [
        ("A", f"{report['a']} ({u['a']} utterances)"),
        ("B (reference)", f"{report['b']} ({u['b']} utterances)"),
        ("utterances compared", f"{u['common']} (ids: {u['ids_matched']}); only in A {u['only_in_a']}, "
                                f"only in B {u['only_in_b']}"),
        ("frames compared", f"{f['frames']} ({f['length_mismatch_utterances']} utterances differ in length)"),
        ("frame agreement, phones", f"{f['phones_pct']} % (markers stripped; kept: {f['phones_with_position_pct']} %)"),
        ("frame agreement, pdfs", pdfs),
        ("same phone sequence", f"{s['same_pct']} % with {'/'.join(s['silence_dropped'])}, "
                                f"{s['same_without_silence_pct']} % without (markers stripped)"),
        ("matched boundaries", f"n {bd['n']}"),
    ]
    if bd["n"]:
        rows += [
            ("  mean |B - A|", f"{bd['mean_abs_ms']} ms"),
            ("  mean B - A", f"{bd['mean_signed_ms']:+} ms (positive: B later)"),
            ("  within 10 / 20 ms", f"{bd['pct_within_10ms']} % / {bd['pct_within_20ms']} %"),
        ]
    rows += [
        ("different pronunciation", f"{p['utterances_different']} of {p['utterances_compared']} utterances "
                                    f"({p['words_different']} of {p['words_compared']} words); "
                                    f"{p['word_count_mismatch_utterances']} with different word counts"),
    ]
    rows += [("", pair) for pair in p["top_pairs_a_vs_b"]]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
