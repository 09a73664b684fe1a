"""Word and character error rates with ``kaldialign``, written the way sclite writes them.

Alignments use sclite's edit costs (``kaldialign.align(..., sclite_mode=True)``:
insertion 3, deletion 3, substitution 4), so the substitution/deletion/insertion
split matches ``sclite -i rm``. Like sclite's default, scoring is
case-insensitive (both sides are upper-cased). Conventions, as sclite's:

- ``WER = (Sub + Del + Ins) / #Wrd`` — it exceeds 100 % when insertions pile up;
- an empty reference has 0 words; any hypothesis words there are insertions;
- ``Corr = #Wrd - Sub - Del``; ``S.Err`` is the share of sentences with any error.

CER is computed the same way on characters, spaces removed (Kaldi/icefall style).

>>> c = utterance_errors("A B C", "A X C D")
>>> (c.words, c.corr, c.sub, c.dele, c.ins, c.err)
(3, 2, 1, 0, 1, 2)
>>> s = score_set({"u1": "A B C", "u2": ""}, {"u1": "A X C D", "u2": "HELLO"})
>>> (s.words, s.sub, s.ins, round(s.wer, 2), s.sentence_errors)
(3, 1, 2, 100.0, 2)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import kaldialign

from weakalign.pipeline.io import atomic_open

EPS = "*"


def normalize(text: str) -> list[str]:
    """Upper-cased words (sclite is case-insensitive by default)."""
    return text.upper().split()


def characters(text: str) -> list[str]:
    """The characters of the words, spaces dropped."""
    return [ch for ch in text.upper() if not ch.isspace()]


@dataclass
class Counts:
    """Error counts of one utterance or a sum of them (sclite's columns)."""

    sentences: int = 0
    words: int = 0
    corr: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    sentence_errors: int = 0

    @property
    def err(self) -> int:
        return self.sub + self.dele + self.ins

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))

    def rate(self, n: int) -> float:
        """``100 * n / words``; with no reference words: 0 if ``n`` is 0, else infinity."""
        if self.words:
            return 100.0 * n / self.words
        return 0.0 if n == 0 else math.inf

    @property
    def wer(self) -> float:
        return self.rate(self.err)

    @property
    def sentence_error_rate(self) -> float:
        return 100.0 * self.sentence_errors / self.sentences if self.sentences else 0.0


def align_tokens(ref: list[str], hyp: list[str]) -> list[tuple[str, str]]:
    """kaldialign alignment with sclite costs; ``EPS`` marks insertions (ref side) / deletions."""
    if not ref and not hyp:
        return []
    return kaldialign.align(ref, hyp, EPS, sclite_mode=True)


def count_alignment(pairs: Iterable[tuple[str, str]]) -> Counts:
    c = Counts(sentences=1)
    for r, h in pairs:
        if r == EPS:
            c.ins += 1
            continue
        c.words += 1
        if h == EPS:
            c.dele += 1
        elif h == r:
            c.corr += 1
        else:
            c.sub += 1
    c.sentence_errors = int(c.err > 0)
    return c


def utterance_errors(ref: str, hyp: str, unit: str = "word") -> Counts:
    """Counts of one utterance; ``unit`` is ``word`` or ``char``."""
    split = normalize if unit == "word" else characters
    return count_alignment(align_tokens(split(ref), split(hyp)))


@dataclass
class SetScore:
    """Per-utterance counts of a set, with their sum."""

    per_utt: dict[str, Counts] = field(default_factory=dict)

    @property
    def total(self) -> Counts:
        return sum(self.per_utt.values(), Counts())

    def __getattr__(self, name):
        # words, sub, wer, ... of the total
        if name.startswith("_") or name == "per_utt":
            raise AttributeError(name)
        return getattr(self.total, name)

    def by_speaker(self, utt2spk: Mapping[str, str]) -> dict[str, Counts]:
        out: dict[str, Counts] = {}
        for utt, c in self.per_utt.items():
            spk = utt2spk.get(utt, utt)
            out[spk] = out.get(spk, Counts()) + c
        return dict(sorted(out.items()))


def check_same_utterances(refs: Mapping[str, str], hyps: Mapping[str, str]) -> None:
    missing = sorted(set(refs) - set(hyps))
    extra = sorted(set(hyps) - set(refs))
    if missing or extra:
        raise ValueError(f"hypotheses and references differ: {len(missing)} utterance(s) without a hypothesis "
                         f"(e.g. {missing[:3]}), {len(extra)} hypothesis(es) without a reference (e.g. {extra[:3]})")


def score_set(refs: Mapping[str, str], hyps: Mapping[str, str], unit: str = "word") -> SetScore:
    """Score every utterance of ``refs``; ``hyps`` must have exactly the same ids."""
    check_same_utterances(refs, hyps)
    return SetScore({utt: utterance_errors(refs[utt], hyps[utt], unit) for utt in refs})


# ---------------------------------------------------------------- sclite trn files

def write_trn(path: str | os.PathLike, texts: Mapping[str, str]) -> None:
    """sclite ``trn``: one line ``words (uttid)`` per utterance, sorted by id, atomically."""
    with atomic_open(path, "w") as f:
        for utt in sorted(texts):
            f.write(f"{' '.join(texts[utt].split())} ({utt})\n")


def read_trn(path: str | os.PathLike) -> dict[str, str]:
    """Inverse of :func:`write_trn`; a line not ending in ``(uttid)`` raises naming the line."""
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            open_at = line.rfind("(")
            if open_at < 0 or not line.endswith(")"):
                raise ValueError(f"{path}:{lineno}: not a trn line (no trailing '(uttid)'): {line!r}")
            out[line[open_at + 1:-1]] = line[:open_at].strip()
    return out


# ---------------------------------------------------------------- tables

TABLE_HEADER = "| SPKR | # Snt | # Wrd | Corr | Sub | Del | Ins | Err | S.Err |"


def _row(name: str, c: Counts) -> str:
    def pct(n):
        v = c.rate(n)
        return "inf" if math.isinf(v) else f"{v:.1f}"

    return (f"| {name} | {c.sentences} | {c.words} | {pct(c.corr)} | {pct(c.sub)} | {pct(c.dele)} | "
            f"{pct(c.ins)} | {pct(c.err)} | {c.sentence_error_rate:.1f} |")


def sclite_table(score: SetScore, utt2spk: Mapping[str, str] | None = None) -> str:
    """sclite's ``sys`` summary as a markdown table: one row per speaker and ``Sum/Avg``.

    >>> print(sclite_table(score_set({"u": "A B"}, {"u": "A"}), {"u": "s1"}))
    | SPKR | # Snt | # Wrd | Corr | Sub | Del | Ins | Err | S.Err |
    |---|---|---|---|---|---|---|---|---|
    | s1 | 1 | 2 | 50.0 | 0.0 | 50.0 | 0.0 | 50.0 | 100.0 |
    | Sum/Avg | 1 | 2 | 50.0 | 0.0 | 50.0 | 0.0 | 50.0 | 100.0 |
    """
    lines = [TABLE_HEADER, "|---" * 9 + "|"]
    if utt2spk is not None:
        lines += [_row(spk, c) for spk, c in score.by_speaker(utt2spk).items()]
    lines.append(_row("Sum/Avg", score.total))
    return "\n".join(lines)


def format_alignment(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """sclite ``pralign`` style: errors upper-case, correct words lower-case, ``*`` padding."""
    ref_out, hyp_out = [], []
    for r, h in pairs:
        width = max(len(r), len(h))
        if r == h:
            r, h = r.lower(), h.lower()
        ref_out.append((r if r != EPS else "*" * len(h)).ljust(width))
        hyp_out.append((h if h != EPS else "*" * len(r)).ljust(width))
    return " ".join(ref_out), " ".join(hyp_out)


def write_per_utterance(path: str | os.PathLike, refs: Mapping[str, str], hyps: Mapping[str, str],
                        score: SetScore, utt2spk: Mapping[str, str] | None = None) -> None:
    """Per utterance: id, speaker, counts, and the aligned REF/HYP lines, worst first."""
    order = sorted(score.per_utt, key=lambda u: (-score.per_utt[u].err, u))
    with atomic_open(path, "w") as f:
        for utt in order:
            c = score.per_utt[utt]
            ref, hyp = format_alignment(align_tokens(normalize(refs[utt]), normalize(hyps[utt])))
            spk = (utt2spk or {}).get(utt, "-")
            f.write(f"id: ({utt}) spk: {spk}\n"
                    f"Scores: (#C #S #D #I) {c.corr} {c.sub} {c.dele} {c.ins}  #Wrd {c.words}\n"
                    f"REF:  {ref}\nHYP:  {hyp}\n\n")


# ``results.json`` maps each scored split to its figures; these top-level keys are not splits.
RESULTS_META_KEYS = ("training",)


def split_results(results: Mapping) -> dict:
    """The per-split entries of a ``results.json`` (without ``"training"`` and other non-split keys).

    >>> sorted(split_results({"dev": {"wer": 1.0}, "test": {"wer": 2.0}, "training": {"seed": 1}}))
    ['dev', 'test']
    """
    return {k: v for k, v in results.items() if k not in RESULTS_META_KEYS}


def summary_dict(score: SetScore) -> dict:
    """The figures ``results.json`` holds for one unit (percentages rounded to 2 decimals)."""
    t = score.total

    def pct(v):
        return None if math.isinf(v) else round(v, 2)

    return {"err": pct(t.wer), "words": t.words, "corr": t.corr, "sub": t.sub, "del": t.dele, "ins": t.ins,
            "sentences": t.sentences, "sentence_errors": t.sentence_errors,
            "sentence_error_rate": round(t.sentence_error_rate, 2)}


def score_trn_dir(directory: str | os.PathLike, utt2spk: Mapping[str, str] | None = None) -> dict:
    """Score ``hyp.trn`` against ``ref.trn`` in ``directory``; write the tables there; return figures."""
    directory = Path(directory)
    refs, hyps = read_trn(directory / "ref.trn"), read_trn(directory / "hyp.trn")
    word = score_set(refs, hyps, "word")
    char = score_set(refs, hyps, "char")
    with atomic_open(directory / "result.wer.md", "w") as f:
        f.write(sclite_table(word, utt2spk) + "\n")
    with atomic_open(directory / "result.cer.md", "w") as f:
        f.write(sclite_table(char, utt2spk) + "\n")
    write_per_utterance(directory / "per_utt.txt", refs, hyps, word, utt2spk)
    return {"word": word, "char": char, "refs": refs, "hyps": hyps}
