"""The ``lang`` directory: phones, words, lexicon FSTs and HMM topology, as Kaldi's
``utils/prepare_lang.sh`` + ``utils/lang/make_lexicon_fst.py`` build them.

From a pronunciation lexicon (Kaldi ``lexicon.txt``, CMUdict with ``;;;`` comments and
``WORD(2)`` variants, AN4's ``an4.dic`` + ``an4.filler``, speechocean762's
``resource/lexicon.txt``) :func:`prepare_lang` writes:

- ``phones.txt``: ``<eps>``, the silence phones ``SIL``, ``SPN`` with their position
  variants (``SIL SIL_B SIL_E SIL_I SIL_S``), every non-silence phone with ``_B _E _I _S``
  (word begin / end / internal / singleton), then disambiguation symbols ``#0 #1 ...``;
- ``words.txt``: ``<eps>``, the sorted words (with ``<UNK>``), ``#0``, ``<s>``, ``</s>``;
- ``phones/{sets,roots,extra_questions,silence,nonsilence,optional_silence,disambig,
  context_indep,word_boundary}.{txt,int}`` and ``phones/align_lexicon.{txt,int}``.
  Stress variants of a phone (``AH0 AH1 AH2``) and all their position variants form one
  set, i.e. one tree root (``shared split``);
- ``L.fst``, ``L_disambig.fst`` (kaldifst, olabel-sorted) with optional silence after each
  word (probability ``sil_prob``) and, in ``L_disambig``, ``#0`` self-loops for G's back-off;
- ``oov.txt``/``oov.int`` (``<UNK>``, pronounced ``SPN``) and ``topo`` (3-state
  left-to-right HMMs for non-silence phones, 5-state for silence, as Kaldi's ``gen_topo.pl``).

The ``lang`` stage (:func:`lang_stage`, ``weakalign lang CORPUS [--lexicon PATH] [--lm ARPA]``)
also counts the transcripts' words missing from the lexicon, and adds the decoding LM:
``lm.arpa`` (given, AN4's ``etc/an4.ug.lm``, or a Kneser-Ney 3-gram trained on the train
transcripts) extended to every spoken lexicon word, and ``G.fst`` (see :mod:`.graph`).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "lexicon.txt").write_text("EIGHT EY T\\nATE EY T\\nA AH0\\n")
>>> lang = prepare_lang(d / "lexicon.txt", d / "lang")
>>> lang.words_to_ids(["A", "EIGHT", "NINE"]) == [lang.words["A"], lang.words["EIGHT"], lang.oov_id]
True
>>> [lang.phone_names[p] for p in lang.roots[2][0]][:4]
['AH0_B', 'AH0_E', 'AH0_I', 'AH0_S']
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable

from ..pipeline.io import atomic_open, atomic_path, read_json
from ..pipeline.options import content_digest, declares_inputs
from ..pipeline.report import SkipReport
from ..pipeline.stage import MissingInput
from ..pipeline.workspace import Workspace

log = logging.getLogger("weakalign")

SILENCE_PHONE = "SIL"
SPOKEN_NOISE_PHONE = "SPN"
POSITIONS = ("_B", "_E", "_I", "_S")
#: Utterances with OOV words named in the log per split (all are counted).
MAX_OOV_WARNINGS = 20
#: Words reserved for the LM's sentence boundaries: never lexicon entries.
RESERVED_WORDS = ("<eps>", "<s>", "</s>", "#0")

_VARIANT = re.compile(r"^(?P<word>.+?)\((?P<n>\d+)\)$")
_STRESS = re.compile(r"^(?P<base>.*?[A-Za-z_])(?P<stress>\d+)$")


# ---------------------------------------------------------------------------------------
# Reading lexicons.
# ---------------------------------------------------------------------------------------

def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_lexicon(path: str | os.PathLike, report: SkipReport | None = None) -> list[tuple[str, list[str]]]:
    """``(word, phones)`` pairs of a lexicon file, duplicates removed, in file order.

    Accepts Kaldi ``lexicon.txt`` (``word p1 p2``; a ``lexiconp.txt`` probability after the
    word is dropped), CMUdict (``;;;`` comments, ``WORD(1)`` variants) and Sphinx ``.dic``.
    Lines without phones are reported and skipped.
    """
    entries, seen = [], set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith(";;;") or line.startswith("#"):
                continue
            fields = line.split()
            word = fields[0]
            m = _VARIANT.match(word)
            if m:
                word = m.group("word")
            phones = fields[1:]
            if phones and _is_number(phones[0]):
                phones = phones[1:]  # lexiconp.txt: pronunciation probability
            if not phones:
                if report is not None:
                    report.skip(f"{Path(path).name}:{lineno}", f"no phones: word {word!r}")
                continue
            key = (word, tuple(phones))
            if key not in seen:
                seen.add(key)
                entries.append((word, phones))
    if not entries:
        raise ValueError(f"lexicon {path} has no entries")
    return entries


def read_fillers(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """Sphinx filler dictionary (``<sil> SIL``, ``++NOISE++ +NOISE+``) as lexicon entries.

    ``<s>``/``</s>`` are left to the LM; fillers pronounced ``SIL`` keep it, any other
    filler becomes spoken noise (``SPN``).
    """
    entries = []
    for word, phones in read_lexicon(path):
        if word in RESERVED_WORDS:
            continue
        entries.append((word, [SILENCE_PHONE if p.upper() == SILENCE_PHONE else SPOKEN_NOISE_PHONE
                               for p in phones][:1]))
    return entries


def default_filler_path(lexicon_path: Path) -> Path | None:
    """AN4-style ``<name>.filler`` next to ``<name>.dic``, if present."""
    candidate = lexicon_path.with_suffix(".filler")
    return candidate if lexicon_path.suffix == ".dic" and candidate.is_file() else None


def base_phone(phone: str) -> str:
    """The phone without word-position suffix: ``AH0_B`` -> ``AH0``; ``SIL`` -> ``SIL``."""
    return phone[:-2] if phone[-2:] in POSITIONS else phone


def stress_group(phone: str) -> str:
    """The phone without stress digits: ``AH0`` -> ``AH``; ``SIL`` -> ``SIL``."""
    m = _STRESS.match(phone)
    return m.group("base") if m else phone


# ---------------------------------------------------------------------------------------
# Building the lang directory.
# ---------------------------------------------------------------------------------------

def _position_dependent(phones: list[str]) -> list[str]:
    if len(phones) == 1:
        return [phones[0] + "_S"]
    return [phones[0] + "_B"] + [p + "_I" for p in phones[1:-1]] + [phones[-1] + "_E"]


def _add_disambig(prons: list[tuple[str, list[str]]]) -> tuple[list[list[str]], int]:
    """Append ``#n`` to pronunciations that are homophones or a prefix of another one, as
    Kaldi's ``add_lex_disambig.pl``; returns the new pronunciations and the largest ``n``."""
    count: dict[tuple, int] = defaultdict(int)
    prefixes: set[tuple] = set()
    for _, phones in prons:
        count[tuple(phones)] += 1
        for i in range(1, len(phones)):
            prefixes.add(tuple(phones[:i]))
    used: dict[tuple, int] = defaultdict(int)
    out, max_disambig = [], 0
    for _, phones in prons:
        key = tuple(phones)
        if key in prefixes or count[key] > 1:
            used[key] += 1
            max_disambig = max(max_disambig, used[key])
            out.append(list(phones) + [f"#{used[key]}"])
        else:
            out.append(list(phones))
    return out, max_disambig


def make_topo_text(nonsil_ids: Iterable[int], sil_ids: Iterable[int],
                   num_nonsil_states: int = 3, num_sil_states: int = 5) -> str:
    """Kaldi's standard topology (``utils/gen_topo.pl 3 5``)."""
    lines = ["<Topology>", "<TopologyEntry>", "<ForPhones>", " ".join(map(str, nonsil_ids)), "</ForPhones>"]
    for s in range(num_nonsil_states):
        lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
    lines += [f"<State> {num_nonsil_states} </State>", "</TopologyEntry>"]
    lines += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, sil_ids)), "</ForPhones>"]
    n = num_sil_states
    p = 1.0 / (n - 1)
    first = " ".join(f"<Transition> {d} {p:g}" for d in range(n - 1))
    lines.append(f"<State> 0 <PdfClass> 0 {first} </State>")
    for s in range(1, n - 1):
        trans = " ".join(f"<Transition> {d} {p:g}" for d in range(1, n))
        lines.append(f"<State> {s} <PdfClass> {s} {trans} </State>")
    lines.append(f"<State> {n - 1} <PdfClass> {n - 1} <Transition> {n - 1} 0.75 <Transition> {n} 0.25 </State>")
    lines += [f"<State> {n} </State>", "</TopologyEntry>", "</Topology>"]
    return "\n".join(lines) + "\n"


def build_lexicon_fst(prons: list[tuple[int, list[int]]], *, sil_phone: int, sil_prob: float,
                      sil_disambig: int | None = None):
    """Lexicon FST with optional silence after each word (``make_lexicon_fst.py``).

    ``prons``: ``(word_id, phone_ids)``. States: 0 start, 1 loop (word boundary, final),
    2 after-silence. Each word's last phone goes to the loop state with cost
    ``-log(1 - sil_prob)`` or to the silence state with cost ``-log(sil_prob)``.
    """
    import kaldifst

    no_sil_cost, sil_cost = -math.log(1.0 - sil_prob), -math.log(sil_prob)
    start, loop, sil = 0, 1, 2
    arcs = [(start, loop, 0, 0, no_sil_cost), (start, sil, 0, 0, sil_cost)]
    next_state = 3
    if sil_disambig is None:
        arcs.append((sil, loop, sil_phone, 0, 0.0))
    else:
        arcs += [(sil, 3, sil_phone, 0, 0.0), (3, loop, sil_disambig, 0, 0.0)]
        next_state = 4
    for word, phones in prons:
        cur = loop
        for i, phone in enumerate(phones[:-1]):
            arcs.append((cur, next_state, phone, word if i == 0 else 0, 0.0))
            cur, next_state = next_state, next_state + 1
        last = phones[-1] if phones else 0
        out = word if len(phones) <= 1 else 0
        arcs += [(cur, loop, last, out, no_sil_cost), (cur, sil, last, out, sil_cost)]
    text = "".join(f"{a} {b} {i} {o} {w:.6g}\n" for a, b, i, o, w in arcs) + f"{loop}\n"
    return kaldifst.compile(text, acceptor=False)


@dataclass
class Lang:
    """A lang directory loaded into memory (see the module docstring for its files).

    ``phones``/``words`` map names to ids; ``phone_names``/``word_names`` are lists by id.
    ``roots`` are ``(phone_ids, shared, split)``; ``sets`` and ``extra_questions`` lists of
    phone-id lists, as Kaldi's tree-building tools read them.
    """

    dir: Path
    phones: dict[str, int]
    phone_names: list[str]
    words: dict[str, int]
    word_names: list[str]
    disambig_phone_ids: list[int]
    silence_phone_ids: list[int]
    nonsilence_phone_ids: list[int]
    optional_silence_id: int
    context_indep_ids: list[int]
    roots: list[tuple[list[int], bool, bool]]
    sets: list[list[int]]
    extra_questions: list[list[int]]
    topo_text: str
    oov_word: str
    oov_id: int
    word_boundary: dict[int, str] = field(default_factory=dict)
    #: OOV words met by :meth:`words_to_ids` so far, with their counts.
    oov_counts: Counter = field(default_factory=Counter)

    @property
    def word_ids(self) -> dict[str, int]:
        """Alias of :attr:`words` (name -> id)."""
        return self.words

    @property
    def real_phone_ids(self) -> list[int]:
        """Every phone that can appear in an alignment: no ``<eps>``, no ``#n``."""
        return sorted(self.silence_phone_ids + self.nonsilence_phone_ids)

    @property
    def word_disambig_id(self) -> int:
        return self.words["#0"]

    def topo(self):
        """The HMM topology as a ``kaldi_hmm_gmm.HmmTopology``."""
        import kaldi_hmm_gmm as khg

        topo = khg.HmmTopology()
        topo.read(self.topo_text)
        return topo

    def lexicon_fst(self):
        import kaldifst

        return kaldifst.StdVectorFst.read(str(self.dir / "L.fst"))

    def lexicon_fst_disambig(self):
        import kaldifst

        return kaldifst.StdVectorFst.read(str(self.dir / "L_disambig.fst"))

    def base_phone_name(self, phone_id: int) -> str:
        """Phone name without the word-position suffix (``AH0_B`` -> ``AH0``)."""
        return base_phone(self.phone_names[phone_id])

    def words_to_ids(self, words: list[str], report: SkipReport | None = None, utt_id: str | None = None) -> list[int]:
        """Word ids of a transcript; words not in ``words.txt`` become the OOV word (``<UNK>``),
        counted in :attr:`oov_counts` and warned about in ``report`` naming the utterance."""
        ids = []
        for w in words:
            wid = self.words.get(w)
            if wid is None or w in RESERVED_WORDS:
                self.oov_counts[w] += 1
                if report is not None:
                    report.warn(utt_id or "?", f"OOV word {w!r} mapped to {self.oov_word}")
                wid = self.oov_id
            ids.append(wid)
        return ids

    @classmethod
    def load(cls, lang_dir: str | os.PathLike) -> "Lang":
        d = Path(lang_dir)
        phones = _read_symbols(d / "phones.txt")
        words = _read_symbols(d / "words.txt")

        def ids(name: str) -> list[int]:
            return [int(x) for x in (d / "phones" / name).read_text().split()]

        def int_lines(name: str) -> list[list[int]]:
            return [[int(x) for x in line.split()] for line in (d / "phones" / name).read_text().splitlines()
                    if line.strip()]

        roots = []
        for line in (d / "phones" / "roots.int").read_text().splitlines():
            if line.strip():
                shared, split, *rest = line.split()
                roots.append(([int(x) for x in rest], shared == "shared", split == "split"))
        boundary = {}
        wb = d / "phones" / "word_boundary.int"
        if wb.exists():
            for line in wb.read_text().splitlines():
                if line.strip():
                    pid, kind = line.split()
                    boundary[int(pid)] = kind
        oov_word = (d / "oov.txt").read_text().split()[0]
        return cls(
            dir=d,
            phones=phones,
            phone_names=_names_by_id(phones),
            words=words,
            word_names=_names_by_id(words),
            disambig_phone_ids=ids("disambig.int"),
            silence_phone_ids=ids("silence.int"),
            nonsilence_phone_ids=ids("nonsilence.int"),
            optional_silence_id=ids("optional_silence.int")[0],
            context_indep_ids=ids("context_indep.int"),
            roots=roots,
            sets=int_lines("sets.int"),
            extra_questions=int_lines("extra_questions.int"),
            topo_text=(d / "topo").read_text(),
            oov_word=oov_word,
            oov_id=words[oov_word],
            word_boundary=boundary,
        )


def _read_symbols(path: Path) -> dict[str, int]:
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, idx = line.split()
            table[name] = int(idx)
    return table


def _read_int_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _names_by_id(table: dict[str, int]) -> list[str]:
    names = [""] * (max(table.values()) + 1)
    for name, idx in table.items():
        names[idx] = name
    return names


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _write_fst(path: Path, fst) -> None:
    with atomic_path(path) as tmp:
        if not fst.write(str(tmp)):
            raise OSError(f"could not write FST {path}")


def _lexicon_entries(lexicon_path: Path, filler_path: Path | None, oov: str, upper_case: bool,
                     report: SkipReport | None) -> list[tuple[str, list[str]]]:
    """The lexicon's ``(word, phones)`` entries, then its fillers and the OOV word (pronounced
    ``SPN``) where the lexicon lacks them; a phone name the lang directory reserves is an error."""
    entries, seen = [], set()
    for w, ps in read_lexicon(lexicon_path, report):
        if upper_case and not w.startswith("<"):
            w = w.upper()
        ps = [p.upper() if p.upper() in (SILENCE_PHONE, SPOKEN_NOISE_PHONE) else p for p in ps]
        key = (w, tuple(ps))
        if w not in RESERVED_WORDS and key not in seen:  # upper-casing can make duplicates
            seen.add(key)
            entries.append((w, ps))
    known_words = {w for w, _ in entries}
    if filler_path is not None:
        entries += [e for e in read_fillers(filler_path) if e[0] not in known_words]
    if oov not in known_words:
        entries.append((oov, [SPOKEN_NOISE_PHONE]))
    for w, ps in entries:
        bad = [p for p in ps if p.startswith("#") or p[-2:] in POSITIONS or p == "<eps>"]
        if bad:
            raise ValueError(f"lexicon {lexicon_path}: word {w!r} uses reserved phone name(s) {bad}")
    return entries


@dataclass
class _PhoneInventory:
    """The lexicon's base phones and their position variants, in ``phones.txt`` order: silence
    phones first, then the non-silence phones grouped by stress (one group per tree root)."""

    nonsil_lines: list[list[str]]
    position_dependent: bool
    silence_base: ClassVar[tuple[str, ...]] = (SILENCE_PHONE, SPOKEN_NOISE_PHONE)

    @classmethod
    def from_entries(cls, entries: list[tuple[str, list[str]]], position_dependent: bool) -> "_PhoneInventory":
        nonsil = sorted({p for _, ps in entries for p in ps} - {SILENCE_PHONE, SPOKEN_NOISE_PHONE})
        groups: dict[str, list[str]] = defaultdict(list)
        for p in nonsil:
            groups[stress_group(p)].append(p)
        return cls([groups[g] for g in sorted(groups)], position_dependent)

    @property
    def nonsil(self) -> list[str]:
        return sorted(p for line in self.nonsil_lines for p in line)

    @property
    def sil_suffixes(self) -> tuple[str, ...]:
        return ("",) + POSITIONS if self.position_dependent else ("",)

    def variants(self, p: str) -> list[str]:
        nonsil_suffixes = POSITIONS if self.position_dependent else ("",)
        return [p + s for s in (self.sil_suffixes if p in self.silence_base else nonsil_suffixes)]

    @property
    def silence(self) -> list[str]:
        return [v for p in self.silence_base for v in self.variants(p)]

    @property
    def nonsilence(self) -> list[str]:
        return [v for line in self.nonsil_lines for p in line for v in self.variants(p)]

    def sets(self) -> list[list[str]]:
        """``phones/sets``: one per silence phone, one per stress group, with all variants."""
        return [self.variants(b) for b in self.silence_base] + \
               [[v for p in line for v in self.variants(p)] for line in self.nonsil_lines]

    def extra_questions(self) -> list[list[str]]:
        """Kaldi's ``extra_questions``: silence vs the rest, each stress level, each word position."""
        nonsil = self.nonsil
        extra = [self.silence]
        stresses = sorted({_STRESS.match(p).group("stress") for p in nonsil if _STRESS.match(p)})
        if stresses:
            unstressed = [p for p in nonsil if not _STRESS.match(p)]
            if unstressed:
                extra.append([v for p in unstressed for v in self.variants(p)])
            for s in stresses:
                extra.append([v for p in nonsil if _STRESS.match(p) and _STRESS.match(p).group("stress") == s
                              for v in self.variants(p)])
        if self.position_dependent:
            for suffix in POSITIONS:
                extra.append([p + suffix for line in self.nonsil_lines for p in line])
            for suffix in self.sil_suffixes:
                extra.append([p + suffix for p in self.silence_base])
        return extra


def _write_phone_sets(out: Path, inventory: _PhoneInventory, disambig: list[str], phones: dict[str, int]) -> None:
    """``phones/*.{txt,int}``: the tree's sets, roots and questions and the phone classes."""
    def text_and_int(name: str, rows: list[list[str]], prefix=lambda i: "") -> None:
        rows = [r for r in rows if r]
        _write_lines(out / "phones" / f"{name}.txt", (prefix(i) + " ".join(r) for i, r in enumerate(rows)))
        _write_lines(out / "phones" / f"{name}.int",
                     (prefix(i) + " ".join(str(phones[p]) for p in r) for i, r in enumerate(rows)))

    silence, nonsilence = inventory.silence, inventory.nonsilence
    sets = inventory.sets()
    text_and_int("sets", sets)
    text_and_int("roots", sets, prefix=lambda i: "shared split ")
    text_and_int("extra_questions", inventory.extra_questions())
    text_and_int("silence", [[p] for p in silence])
    text_and_int("nonsilence", [[p] for p in nonsilence])
    text_and_int("optional_silence", [[SILENCE_PHONE]])
    text_and_int("disambig", [[p] for p in disambig])
    text_and_int("context_indep", [[p] for p in silence])
    if inventory.position_dependent:
        kinds = {"_B": "begin", "_E": "end", "_I": "internal", "_S": "singleton"}
        rows = [(p, kinds.get(p[-2:], "nonword")) for p in silence + nonsilence]
        _write_lines(out / "phones" / "word_boundary.txt", (f"{p} {k}" for p, k in rows))
        _write_lines(out / "phones" / "word_boundary.int", (f"{phones[p]} {k}" for p, k in rows))


def _write_lexicon_fsts(out: Path, pos_entries: list[tuple[str, list[str]]], disambig_prons: list[list[str]],
                        words: dict[str, int], phones: dict[str, int], sil_disambig: str, sil_prob: float) -> None:
    """``L.fst`` and ``L_disambig.fst`` (the latter with ``#0`` self-loops so G's back-off symbol
    passes through), both olabel-sorted for composition."""
    import kaldifst

    L = build_lexicon_fst([(words[w], [phones[p] for p in ps]) for w, ps in pos_entries],
                          sil_phone=phones[SILENCE_PHONE], sil_prob=sil_prob)
    kaldifst.arcsort(L, sort_type="olabel")
    _write_fst(out / "L.fst", L)
    L_disambig = build_lexicon_fst(
        [(words[w], [phones[p] for p in ps]) for (w, _), ps in zip(pos_entries, disambig_prons)],
        sil_phone=phones[SILENCE_PHONE], sil_prob=sil_prob, sil_disambig=phones[sil_disambig])
    kaldifst.add_self_loops(L_disambig, [phones["#0"]], [words["#0"]])
    kaldifst.arcsort(L_disambig, sort_type="olabel")
    _write_fst(out / "L_disambig.fst", L_disambig)


def prepare_lang(lexicon_path: str | os.PathLike, out_dir: str | os.PathLike, *, sil_prob: float = 0.5,
                 position_dependent: bool = True, oov: str = "<UNK>",
                 filler_path: str | os.PathLike | None = None, upper_case: bool = True,
                 report: SkipReport | None = None) -> Lang:
    """Build a Kaldi lang directory from a lexicon; see the module docstring.

    ``filler_path`` defaults to ``<name>.filler`` beside a Sphinx ``<name>.dic``.
    ``upper_case``: upper-case the lexicon's words (not ``<tokens>``), as the prepared
    transcripts are (e.g. TED-LIUM's lower-case ``TEDLIUM.152k.dic``).
    """
    lexicon_path = Path(lexicon_path)
    out = Path(out_dir)
    (out / "phones").mkdir(parents=True, exist_ok=True)
    filler_path = Path(filler_path) if filler_path else default_filler_path(lexicon_path)
    entries = _lexicon_entries(lexicon_path, filler_path, oov, upper_case, report)
    inventory = _PhoneInventory.from_entries(entries, position_dependent)

    # Lexicon with word-position marks, then disambiguation symbols.
    pos_entries = [(w, _position_dependent(ps) if position_dependent else list(ps)) for w, ps in entries]
    disambig_prons, max_disambig = _add_disambig(pos_entries)
    num_disambig = max_disambig + 1  # one more for the silence disambiguation in L_disambig
    disambig = [f"#{i}" for i in range(num_disambig + 1)]

    silence, nonsilence = inventory.silence, inventory.nonsilence
    phone_list = ["<eps>"] + silence + nonsilence + disambig
    phones = {p: i for i, p in enumerate(phone_list)}
    word_list = ["<eps>"] + sorted({w for w, _ in entries}) + ["#0", "<s>", "</s>"]
    words = {w: i for i, w in enumerate(word_list)}

    _write_lines(out / "phones.txt", (f"{p} {i}" for i, p in enumerate(phone_list)))
    _write_lines(out / "words.txt", (f"{w} {i}" for i, w in enumerate(word_list)))
    _write_phone_sets(out, inventory, disambig, phones)
    _write_lines(out / "phones" / "align_lexicon.txt", (f"{w} {w} {' '.join(ps)}" for w, ps in pos_entries))
    _write_lines(out / "phones" / "align_lexicon.int",
                 (f"{words[w]} {words[w]} {' '.join(str(phones[p]) for p in ps)}" for w, ps in pos_entries))
    _write_lines(out / "oov.txt", [oov])
    _write_lines(out / "oov.int", [str(words[oov])])
    with atomic_open(out / "topo", "w") as f:
        f.write(make_topo_text([phones[p] for p in nonsilence], [phones[p] for p in silence]))
    _write_lexicon_fsts(out, pos_entries, disambig_prons, words, phones, disambig[-1], sil_prob)
    log.info("lang: %d words, %d phones (%d non-silence base phones), %d disambiguation symbols -> %s",
             len(word_list) - 4, len(silence) + len(nonsilence), len(inventory.nonsil), len(disambig), out)
    return Lang.load(out)


# ---------------------------------------------------------------------------------------
# The stage.
# ---------------------------------------------------------------------------------------

def default_lexicon(ws: Workspace) -> Path:
    """The corpus' own lexicon: AN4 ``etc/an4.dic``, speechocean762 ``resource/lexicon.txt``,
    else ``lexicon.txt`` or a ``*.dic`` at the top of the corpus source."""
    from ..pipeline.corpora import default_source
    from ..pipeline.stage import marker_path

    marker = marker_path(ws, "prepare")
    src = None
    if marker.exists():
        src = read_json(marker).get("summary", {}).get("src")
    src = Path(src) if src else default_source(ws.corpus)
    candidates = [src / "etc" / "an4.dic", src / "resource" / "lexicon.txt", src / "lexicon.txt"]
    candidates += sorted(src.glob("*.dic"))  # e.g. TED-LIUM's TEDLIUM.152k.dic
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingInput(f"no default lexicon for corpus {ws.corpus} under {src}: give --lexicon")


def count_oovs(ws: Workspace, lang: Lang, report: SkipReport) -> dict[str, dict]:
    """Words of the prepared supervisions that the lexicon lacks, per split."""
    from lhotse import load_manifest_lazy

    per_split = {}
    if not ws.available_splits():
        log.warning("lang %s: no prepared supervisions under %s: OOVs not counted", ws.corpus, ws.data / "manifests")
    for split in ws.available_splits():
        counts: dict[str, int] = defaultdict(int)
        tokens = utts = 0
        for sup in load_manifest_lazy(ws.manifest("supervisions", split)):
            words = (sup.text or "").split()
            tokens += len(words)
            missing = [w for w in words if w not in lang.words or w in RESERVED_WORDS]
            if missing:
                utts += 1
                for w in missing:
                    counts[w] += 1
                if utts <= MAX_OOV_WARNINGS:
                    report.warn(sup.id, f"{len(missing)} word(s) not in the lexicon: {' '.join(missing)}")
        if utts > MAX_OOV_WARNINGS:
            log.warning("lang: %s: %d more utterances with words not in the lexicon (not listed)",
                        split, utts - MAX_OOV_WARNINGS)
        oov_tokens = sum(counts.values())
        per_split[split] = {"words": tokens, "oov_tokens": oov_tokens, "oov_types": len(counts),
                            "utterances_with_oov": utts,
                            "oov_rate": round(oov_tokens / tokens, 5) if tokens else 0.0,
                            "top_oovs": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:20])}
        log.info("lang %s: %s: %d of %d words (%d types) not in the lexicon -> %s",
                 ws.corpus, split, oov_tokens, tokens, len(counts), lang.oov_word)
    return per_split


def default_lm(ws: Workspace, lexicon: Path) -> Path | None:
    """An ARPA LM the corpus ships (AN4's unigram ``etc/an4.ug.lm`` beside ``an4.dic``), if any."""
    for candidate in (lexicon.parent / "an4.ug.lm",):
        if candidate.is_file():
            return candidate
    return None


def prepare_lm(ws: Workspace, lang: Lang, lexicon: Path, lm: str | os.PathLike | None, order: int = 3) -> dict:
    """``ws.lang/lm.arpa`` (given, shipped by the corpus, or a KN ``order``-gram trained on the
    train transcripts) and ``ws.lang/G.fst`` (as Kaldi's ``format_lm.sh``)."""
    import shutil

    from lhotse import load_manifest_lazy

    from .lm import extend_lm_vocabulary, fst_size, make_g_fst, train_ngram_lm

    arpa = ws.lang / "lm.arpa"
    source = Path(lm) if lm else default_lm(ws, lexicon)
    if source is not None:
        with atomic_path(arpa) as tmp:
            shutil.copyfile(source, tmp)
        how = f"copied from {source}"
    elif ws.manifest("supervisions", "train").exists():
        texts = (s.text or "" for s in load_manifest_lazy(ws.manifest("supervisions", "train")))
        train_ngram_lm(texts, arpa, order=order)
        how = f"{order}-gram Kneser-Ney on the train transcripts"
    else:
        log.warning("lang %s: no LM given or shipped and no train transcripts: no G.fst", ws.corpus)
        return {"lm": None}
    # The decoder can only output words the LM knows: give lexicon words it never saw the
    # smallest unigram probability (not the OOV word, nor silence-only fillers like <sil>).
    silence = set(lang.silence_phone_ids)
    speech_words = {lang.word_names[int(f[0])] for f in _read_int_lines(lang.dir / "phones" / "align_lexicon.int")
                    if any(int(p) not in silence for p in f[2:])}
    vocabulary = [w for w in lang.word_names if w in speech_words and w != lang.oov_word]
    added = extend_lm_vocabulary(arpa, vocabulary, arpa)
    g = make_g_fst(arpa, lang.dir / "words.txt", lang.dir / "G.fst")
    log.info("lang %s: LM %s (+%d lexicon words as unigrams) -> G.fst %s", ws.corpus, how, added, fst_size(g))
    return {"lm": how, "lm_added_unigrams": added, "G": fst_size(g)}


def lang_sources(ws: Workspace, options: dict) -> dict:
    """The files ``lang`` is built from, by path and content: the lexicon and the LM (given or
    the corpus' own). An edited lexicon, or a ``lexicon.txt`` that appears beside the corpus and
    becomes the default, makes the next request rebuild lang."""
    lexicon = Path(options["lexicon"]) if options.get("lexicon") else default_lexicon(ws)
    lm = Path(options["lm"]) if options.get("lm") else default_lm(ws, lexicon)
    return {"lexicon file": f"{lexicon} {content_digest([lexicon])}",
            "lm file": f"{lm} {content_digest([lm])}" if lm else "none: trained on the train transcripts"}


@declares_inputs(lang_sources)
def lang_stage(ws: Workspace, lexicon: str | os.PathLike | None = None, sil_prob: float = 0.5,
               position_dependent: bool = True, lm: str | os.PathLike | None = None, lm_order: int = 3) -> dict:
    """Stage ``lang``: build ``ws.lang`` from the lexicon, count the transcripts' OOVs, and
    add the LM (``lm.arpa`` + ``G.fst``) the decoding graphs use."""
    lexicon = Path(lexicon) if lexicon else default_lexicon(ws)
    report = SkipReport("lang")
    log.info("lang %s: lexicon %s", ws.corpus, lexicon)
    lang = prepare_lang(lexicon, ws.lang, sil_prob=sil_prob, position_dependent=position_dependent, report=report)
    oovs = count_oovs(ws, lang, report)
    lm_info = prepare_lm(ws, lang, lexicon, lm, lm_order)
    report.log_summary()
    outputs = [ws.lang / name for name in ("phones.txt", "words.txt", "L.fst", "L_disambig.fst", "topo",
                                           "oov.txt", "phones/roots.int", "phones/sets.int")]
    if lm_info.get("lm"):
        outputs += [ws.lang / "lm.arpa", ws.lang / "G.fst"]
    return {
        "lexicon": str(lexicon),
        "words": len(lang.words) - 4,
        "phones": len(lang.real_phone_ids),
        "disambig_symbols": len(lang.disambig_phone_ids),
        "oov": oovs,
        **lm_info,
        **report.summary(),
        "outputs": outputs,
    }
