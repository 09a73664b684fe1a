"""Decoding graphs (HCLG) from an ARPA LM, decoding, and word error rates.

As Kaldi's ``utils/format_lm.sh`` + ``utils/mkgraph.sh``:

1. G from the ARPA LM (:func:`~weakalign.kaldi_steps.lm.make_g_fst`, as ``arpa2fst``).
2. LG = det(min(L_disambig o G)) (log-semiring determinisation, as ``fstdeterminizestar
   --use-log=true``).
3. CLG = C o LG with ``kaldifst.compose_context`` (N, P from the tree) and its ``ilabel_info``.
4. H = ``khg.get_h_transducer`` (transition scale 1.0) -> HCLGa = det(H o CLG); the
   disambiguation transition-ids are replaced by epsilon (``fstrmsymbols``, here by
   composing with a one-state relabelling FST), epsilons removed, encoded minimisation.
5. HCLG = ``khg.add_self_loops`` (self-loop scale 0.1, reordered), as ``add-self-loops``.

Kaldi's ``fstpushspecial`` (weight pushing) is not available in kaldifst and is skipped:
the graph accepts the same paths with the same total weights, search is a bit less tight.

:func:`decode_set` runs ``khg.FasterDecoder`` (or, given a transition model, the lattice
decoder) over decodables that are **already scaled** by the acoustic scale (as
``khg.DecodableAmDiagGmmScaled(am, tm, feats, scale)`` and ``DecodableCtc`` matrices of
scaled log-likelihoods are). :func:`compute_wer` scores with ``kaldialign``.

>>> compute_wer({"u1": "A B C", "u2": "D"}, {"u1": ["A", "C"], "u2": ["D", "E"]})["wer"]
50.0
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

from tqdm import tqdm

from ..pipeline.io import atomic_path, write_json
from .lm import fst_size, make_g_fst

log = logging.getLogger("weakalign")

DEFAULT_SELF_LOOP_SCALE = 0.1
DEFAULT_TRANSITION_SCALE = 1.0


# ---------------------------------------------------------------------------------------
# G.
# ---------------------------------------------------------------------------------------

def _load_g(lang_dir: Path, lm: str | os.PathLike | None, out_dir: Path):
    """G from ``lm`` (an ARPA file or a G.fst), else ``lang_dir/G.fst``, else ``lang_dir/lm.arpa``."""
    import kaldifst

    if lm is None:
        if (lang_dir / "G.fst").exists():
            lm = lang_dir / "G.fst"
        elif (lang_dir / "lm.arpa").exists():
            lm = lang_dir / "lm.arpa"
        else:
            raise FileNotFoundError(f"no LM: give lm= (ARPA or G.fst); {lang_dir} has no G.fst or lm.arpa")
    lm = Path(lm)
    if lm.suffix == ".fst":
        return kaldifst.StdVectorFst.read(str(lm)), lm
    return make_g_fst(lm, lang_dir / "words.txt", out_dir / "G.fst"), lm


# ---------------------------------------------------------------------------------------
# HCLG.
# ---------------------------------------------------------------------------------------

def _relabel_to_epsilon(fst, labels: list[int], max_label: int):
    """``fst`` with input ``labels`` replaced by epsilon (Kaldi's ``fstrmsymbols``).

    Done by composing a one-state FST mapping every other input label (1..``max_label``) to
    itself and each of ``labels`` to epsilon on the left: C++ speed, no Python arc loop.
    """
    import kaldifst

    drop = set(labels)
    relabel = kaldifst.StdVectorFst()
    s = relabel.add_state()
    relabel.start = s
    relabel.set_final(s, 0.0)
    for label in range(1, max(max_label, max(drop, default=0)) + 1):
        relabel.add_arc(s, kaldifst.StdArc(0 if label in drop else label, label, 0.0, s))
    kaldifst.arcsort(relabel, sort_type="olabel")
    return kaldifst.compose(relabel, fst)


def compose_hclg(lang, ctx_dep, trans_model, g, *, transition_scale: float = DEFAULT_TRANSITION_SCALE,
                 self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE) -> tuple:
    """HCLG from a :class:`~weakalign.kaldi_steps.lang.Lang`, khg tree and transition model, and G.

    Returns ``(HCLG, sizes)`` with the state/arc counts of each intermediate graph.
    """
    import kaldi_hmm_gmm as khg
    import kaldifst

    sizes = {"G": fst_size(g)}
    L = lang.lexicon_fst_disambig()
    kaldifst.arcsort(L, sort_type="olabel")
    kaldifst.arcsort(g, sort_type="ilabel")
    lg = kaldifst.compose(L, g)
    # determinize_star returns True only when stopped early by max_states.
    if kaldifst.determinize_star(lg, use_log=True):
        log.warning("mkgraph: LG determinisation stopped early (max states)")
    kaldifst.minimize_encoded(lg)
    sizes["LG"] = fst_size(lg)
    if lg.num_states == 0:
        raise ValueError("LG is empty: the LM and the lexicon share no word sequence")

    clg, ilabel_info = kaldifst.compose_context(lang.disambig_phone_ids, ctx_dep.context_width,
                                                ctx_dep.central_position, lg)
    kaldifst.arcsort(clg, sort_type="ilabel")
    sizes["CLG"] = fst_size(clg)

    ha, disambig_tids = khg.get_h_transducer(ilabel_info, ctx_dep, trans_model,
                                             khg.HTransducerConfig(transition_scale=transition_scale))
    kaldifst.arcsort(ha, sort_type="olabel")
    hclga = kaldifst.compose(ha, clg)
    if kaldifst.determinize_star(hclga, use_log=True):
        log.warning("mkgraph: HCLGa determinisation stopped early (max states)")
    if disambig_tids:
        hclga = _relabel_to_epsilon(hclga, list(disambig_tids), trans_model.num_transition_ids)
    kaldifst.rmepsilon(hclga)
    kaldifst.minimize_encoded(hclga)
    sizes["HCLGa"] = fst_size(hclga)

    hclg = khg.add_self_loops(trans_model=trans_model, ifst=hclga, self_loop_scale=self_loop_scale,
                              disambig_syms=[], reorder=True)
    sizes["HCLG"] = fst_size(hclg)
    return hclg, sizes


def make_graph(lang_dir: str | os.PathLike, model_dir: str | os.PathLike, out_dir: str | os.PathLike,
               lm: str | os.PathLike | None = None, *, transition_scale: float = DEFAULT_TRANSITION_SCALE,
               self_loop_scale: float = DEFAULT_SELF_LOOP_SCALE) -> Path:
    """Build ``out_dir/HCLG.fst`` (+ ``words.txt``, ``phones.txt``, ``info.json``) for the model
    in ``model_dir`` (``final.mdl`` + ``tree``), as ``utils/mkgraph.sh``.

    ``lm``: an ARPA file or a ``G.fst``; default ``lang_dir/G.fst`` (else ``lang_dir/lm.arpa``).
    Returns the HCLG path.
    """
    import time

    from .kaldi_io import read_model, read_tree
    from .lang import Lang

    start = time.time()
    lang_dir, model_dir, out_dir = Path(lang_dir), Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lang = Lang.load(lang_dir)
    trans_model, _ = read_model(model_dir / "final.mdl")
    ctx_dep = read_tree(model_dir / "tree")
    g, lm_path = _load_g(lang_dir, lm, out_dir)
    hclg, sizes = compose_hclg(lang, ctx_dep, trans_model, g, transition_scale=transition_scale,
                               self_loop_scale=self_loop_scale)
    with atomic_path(out_dir / "HCLG.fst") as tmp:
        if not hclg.write(str(tmp)):
            raise OSError(f"could not write {out_dir / 'HCLG.fst'}")
    for name in ("words.txt", "phones.txt"):
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(lang_dir / name, tmp)
    info = {"lm": str(lm_path), "model": str(model_dir / "final.mdl"), "context_width": ctx_dep.context_width,
            "central_position": ctx_dep.central_position, "transition_scale": transition_scale,
            "self_loop_scale": self_loop_scale, "sizes": sizes, "seconds": round(time.time() - start, 2)}
    write_json(out_dir / "info.json", info)
    log.info("mkgraph: %s: HCLG %d states, %d arcs (%.1f s)", out_dir, sizes["HCLG"]["states"],
             sizes["HCLG"]["arcs"], info["seconds"])
    return out_dir / "HCLG.fst"


# ---------------------------------------------------------------------------------------
# Decoding and scoring.
# ---------------------------------------------------------------------------------------

def _word_table(words) -> Mapping[int, str]:
    """id -> word from a ``words.txt`` path, an id->word dict, a word->id dict, or a list."""
    if isinstance(words, (str, os.PathLike)):
        table = {}
        for line in Path(words).read_text(encoding="utf-8").splitlines():
            if line.strip():
                w, i = line.split()
                table[int(i)] = w
        return table
    if isinstance(words, Mapping):
        first = next(iter(words), None)
        if isinstance(first, str):
            return {i: w for w, i in words.items()}
        return words
    return dict(enumerate(words))


def word_strings(table: Mapping[int, str], word_ids) -> list[str]:
    """The words of ``word_ids`` (``<id>`` for an id the table lacks).

    >>> word_strings({1: "A", 2: "B"}, [2, 1, 7])
    ['B', 'A', '<7>']
    """
    return [table.get(w, f"<{w}>") for w in word_ids]


def decode_set(hclg, decodables: Iterable[tuple[str, object]], words, beam: float = 13.0,
               lattice_beam: float = 6.0, acoustic_scale: float = 0.1, *, max_active: int = 7000,
               trans_model=None, progress: bool = True, best_paths: dict | None = None) -> dict[str, list[str]]:
    """Decode ``(utt_id, decodable)`` pairs over ``hclg``; returns ``utt_id -> words``.

    The decodables must already be scaled by ``acoustic_scale`` (``DecodableAmDiagGmmScaled``
    does it; scale matrices before ``DecodableCtc``); the scale is only used to report the
    best path's acoustic log-likelihood in the log. With ``trans_model`` the lattice decoder
    (``lattice_beam``) is used, else ``khg.FasterDecoder``. An utterance whose search reaches
    no final state keeps its best partial path, with a warning. ``best_paths``, a dict, receives each
    decoded utterance's best path as transition-ids (one per frame; the faster decoder only).
    """
    import kaldi_hmm_gmm as khg
    import kaldifst

    if isinstance(hclg, (str, os.PathLike)):
        hclg = kaldifst.StdVectorFst.read(str(hclg))
    table = _word_table(words)
    if trans_model is None:
        decoder = khg.FasterDecoder(hclg, khg.FasterDecoderOptions(beam=beam, max_active=max_active))
    else:
        config = khg.LatticeFasterDecoderConfig()
        config.beam, config.lattice_beam, config.max_active = beam, lattice_beam, max_active
        decoder = khg.LatticeFasterDecoder(hclg, config)
    hyps: dict[str, list[str]] = {}
    partial = failed = frames = 0
    total_cost = 0.0
    for utt_id, decodable in tqdm(decodables, desc="decode", disable=not progress, leave=False):
        if trans_model is None:
            decoder.decode(decodable)
            final = decoder.reached_final()
            ok, best = decoder.get_best_path(use_final_probs=final)
            ok = ok and best.num_states > 0
            if ok:
                _, tids, word_ids, weight = kaldifst.get_linear_symbol_sequence(best)
                if best_paths is not None:
                    best_paths[utt_id] = list(tids)
                total_cost += weight.value1 + weight.value2
                frames += decoder.num_frames_decoded()
        else:
            ok, _, word_ids, like = khg.decode_utterance_lattice_faster(decoder, decodable, trans_model,
                                                                        utt_id, True)
            final = ok
        if not ok:
            failed += 1
            log.warning("decode: %s: no path survived the beam (%.1f); empty hypothesis", utt_id, beam)
            hyps[utt_id] = []
            continue
        if not final:
            partial += 1
            log.warning("decode: %s: no final state reached; using the best partial path", utt_id)
        hyps[utt_id] = word_strings(table, word_ids)
    log.info("decode: %d utterances, %d partial, %d failed%s", len(hyps), partial, failed,
             f"; avg acoustic+graph cost/frame {total_cost / frames:.3f} (scale {acoustic_scale})"
             if frames else "")
    return hyps


def compute_wer(refs: Mapping[str, str | list[str]], hyps: Mapping[str, str | list[str]]) -> dict:
    """Word error rate (in %) of ``hyps`` against ``refs`` (``utt_id -> text or word list``).

    Utterances missing from ``hyps`` count as all deletions (``missing``); hypotheses
    without a reference are ignored.
    """
    import kaldialign

    ins = dels = subs = words = sentence_errors = missing = 0
    for utt_id, ref in refs.items():
        ref_words = ref.split() if isinstance(ref, str) else list(ref)
        if utt_id not in hyps:
            missing += 1
        hyp = hyps.get(utt_id, [])
        hyp_words = hyp.split() if isinstance(hyp, str) else list(hyp)
        d = kaldialign.edit_distance(ref_words, hyp_words)
        ins, dels, subs = ins + d["ins"], dels + d["del"], subs + d["sub"]
        words += len(ref_words)
        sentence_errors += d["total"] > 0
    errors = ins + dels + subs
    sentences = len(refs)
    return {
        "wer": round(100.0 * errors / words, 2) if words else 0.0,
        "errors": errors, "ins": ins, "del": dels, "sub": subs, "words": words,
        "sentences": sentences, "sentence_errors": sentence_errors,
        "ser": round(100.0 * sentence_errors / sentences, 2) if sentences else 0.0,
        "missing": missing,
    }
