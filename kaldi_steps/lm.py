"""Language models and G.fst, as Kaldi's ``utils/format_lm.sh``.

G: ``arpa2fst --disambig-symbol=#0 --read-symbol-table=words.txt`` (with ``kaldilm``): back-off
arcs carry ``#0`` on the input side, ``<s>``/``</s>`` become epsilons, n-grams with words outside
``words.txt`` are skipped. :func:`train_ngram_lm` trains a Kneser-Ney ARPA LM with ``kaldingram``
when a corpus ships none; :func:`extend_lm_vocabulary` lets the decoder output every lexicon word.
The ``lang`` stage builds G with these (:func:`~weakalign.kaldi_steps.lang.prepare_lm`), the
decoding graphs compose it (:mod:`~weakalign.kaldi_steps.graph`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from ..pipeline.io import atomic_open, atomic_path

log = logging.getLogger("weakalign")


def train_ngram_lm(texts: Iterable[str], out_path: str | os.PathLike, order: int = 3) -> Path:
    """Train a Kneser-Ney ``order``-gram ARPA LM on transcripts (one per item) with kaldingram.

    Sentences are wrapped in ``<s> ... </s>`` by kaldingram; empty transcripts are ignored.
    """
    from kaldingram.train import NgramCounts

    counts = NgramCounts(order)
    n = 0
    for text in texts:
        words = text.split() if isinstance(text, str) else list(text)
        if words:
            counts.add_raw_counts_from_line(" ".join(words))
            n += 1
    if n == 0:
        raise ValueError("no non-empty transcript to train a language model on")
    counts.cal_discounting_constants()
    counts.cal_f()
    counts.cal_bow()
    with atomic_open(out_path, "w", encoding="latin-1") as f:
        counts.print_as_arpa(fout=f)
    log.info("trained a %d-gram LM on %d sentences -> %s", order, n, out_path)
    return Path(out_path)


def extend_lm_vocabulary(arpa_path: str | os.PathLike, words: Iterable[str], out_path: str | os.PathLike) -> int:
    """Copy an ARPA LM, adding each of ``words`` it lacks as a unigram with the LM's smallest
    unigram probability, so that the decoder can output every lexicon word (an LM trained
    on the train transcripts only has never seen many). Returns how many were added.
    """
    lines = Path(arpa_path).read_text(encoding="latin-1").splitlines()
    try:
        # Free text may precede the data (AN4's LM explains the format, section names included).
        data = [line.strip() for line in lines].index("\\data\\")
        start = data + [line.strip() for line in lines[data:]].index("\\1-grams:")
    except ValueError:
        raise ValueError(f"{arpa_path}: no \\data\\ and \\1-grams: sections; not an ARPA LM?") from None
    end = start + 1
    known, floor = set(), None
    while end < len(lines) and lines[end].strip() and not lines[end].startswith("\\"):
        fields = lines[end].split()
        known.add(fields[1])
        logp = float(fields[0])
        if logp > -98:  # <s> has the placeholder -99
            floor = logp if floor is None else min(floor, logp)
        end += 1
    missing = [w for w in dict.fromkeys(words) if w not in known]
    if missing:
        floor = -7.0 if floor is None else floor
        lines[end:end] = [f"{floor:.6f}\t{w}" for w in missing]
        for i in range(data, start):
            if lines[i].strip().startswith("ngram 1="):
                lines[i] = f"ngram 1={int(lines[i].split('=')[1]) + len(missing)}"
                break
    with atomic_open(out_path, "w", encoding="latin-1") as f:
        f.write("\n".join(lines) + "\n")
    return len(missing)


def make_g_fst(arpa_path: str | os.PathLike, words_txt: str | os.PathLike, out_path: str | os.PathLike):
    """G.fst from an ARPA LM over ``words.txt`` (as ``arpa2fst --disambig-symbol=#0``); returns the FST."""
    import kaldifst
    import kaldilm

    with atomic_path(out_path) as tmp:
        kaldilm.arpa2fst(str(arpa_path), str(tmp), disambig_symbol="#0", read_symbol_table=str(words_txt),
                         ilabel_sort=True, max_arpa_warnings=10)
    g = kaldifst.StdVectorFst.read(str(out_path))
    if g is None or g.num_states == 0:
        raise ValueError(f"G from {arpa_path} is empty: do the LM's words match {words_txt}?")
    return g


def fst_size(fst) -> dict[str, int]:
    import kaldifst

    arcs = sum(fst.num_arcs(s) for s in kaldifst.StateIterator(fst))
    return {"states": fst.num_states, "arcs": arcs}
