"""HCLG construction, decoding and WER: the graph must decode known word sequences back.

No acoustic model is trained here: a ``khg.DecodableCtc`` matrix strongly favours the pdfs of
a known transition-id path (a path of the utterance's own training graph), so decoding
tests the graph (H, C, L, G and their composition), not a model.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import json

import kaldifst
import numpy as np
import pytest

from weakalign.kaldi_steps import kaldi_io as kio
from weakalign.kaldi_steps.graph import compute_wer, decode_set, make_graph
from weakalign.kaldi_steps.lm import extend_lm_vocabulary, make_g_fst, train_ngram_lm

SENTENCES = [["TWO", "FIVE"], ["H", "E", "L", "P"], ["ENTER", "FIFTY", "SEVEN"], ["NO"],
             ["G", "RUBOUT", "SIXTY", "THOUSAND"]]  # no homophones (O/OH would be one)


def _dummy_gmm(num_pdfs: int, dim: int = 3):
    am = khg.AmDiagGmm()
    for _ in range(num_pdfs):
        g = khg.DiagGmm(1, dim)
        g.set_weights(np.ones(1, np.float32))
        g.set_invvars_and_means(np.ones((1, dim), np.float32), np.zeros((1, dim), np.float32))
        g.compute_gconsts()
        am.add_pdf(g)
    return am


def toy_triphone_tree(lang) -> kio.ContextDependency:
    """A triphone tree: per root and pdf-class one pdf, except that the middle state of a
    non-silence phone splits on 'is the left phone a silence phone?'."""
    topo = kio.Topology.from_text(lang.topo_text)
    sil = sorted(lang.silence_phone_ids)
    table: list = [None] * (max(lang.real_phone_ids) + 1)
    next_pdf = 0
    for root, _, _ in lang.roots:
        per_class = []
        for c in range(topo.num_pdf_classes(root[0])):
            if c == 1 and root[0] not in sil:
                per_class.append(kio.SplitEventMap(0, sil, kio.ConstantEventMap(next_pdf),
                                                   kio.ConstantEventMap(next_pdf + 1)))
                next_pdf += 2
            else:
                per_class.append(kio.ConstantEventMap(next_pdf))
                next_pdf += 1
        for p in root:
            table[p] = kio.TableEventMap(-1, per_class)
    return kio.ContextDependency(3, 1, kio.TableEventMap(1, table))


def _model_dir(path, lang, kind: str):
    topo = lang.topo()
    if kind == "mono":
        ctx_dep = khg.monophone_context_dependency_shared([r[0] for r in lang.roots],
                                                          topo.get_phone_to_num_pdf_classes())
    else:
        ctx_dep = kio.tree_to_khg(toy_triphone_tree(lang))
    tm = khg.TransitionModel(ctx_dep, topo)
    path.mkdir()
    kio.write_model(path / "final.mdl", tm, _dummy_gmm(tm.num_pdfs))
    kio.write_tree(path / "tree", ctx_dep)
    return tm, ctx_dep


def _favouring_matrix(tm, ctx_dep, lang, words, frames_per_word: int, seed: int) -> np.ndarray:
    """Scaled log-likelihoods (frames x transition-ids): 0 for the pdf of a path of the
    utterance's training graph at each frame, -20 for every other pdf."""
    compiler = khg.TrainingGraphCompiler(tm, ctx_dep, lang.lexicon_fst_disambig(), lang.disambig_phone_ids,
                                         khg.TrainingGraphCompilerOptions())
    graph = compiler.compile_graph_from_text(lang.words_to_ids(words))
    ok, path = kaldifst.equal_align(graph, frames_per_word * len(words), seed)
    assert ok
    _, tids, olabels, _ = kaldifst.get_linear_symbol_sequence(path)
    assert [lang.word_names[w] for w in olabels] == words
    tid2pdf = np.array(tm.transition_id_to_pdf_array())
    pdfs = tid2pdf[np.array(tids)]
    return np.where(tid2pdf[None, 1:] == pdfs[:, None], 0.0, -20.0).astype(np.float32)


@pytest.mark.parametrize("kind", ["mono", "tri"])
def test_hclg_decodes_known_word_sequences(an4_lang, tmp_path, kind):
    tm, ctx_dep = _model_dir(tmp_path / kind, an4_lang, kind)
    hclg_path = make_graph(an4_lang.dir, tmp_path / kind, tmp_path / "graph")
    info = json.loads((tmp_path / "graph" / "info.json").read_text())
    assert info["context_width"] == (1 if kind == "mono" else 3)
    assert info["sizes"]["HCLG"]["arcs"] > info["sizes"]["HCLGa"]["arcs"]  # self-loops added
    assert (tmp_path / "graph" / "words.txt").read_text() == (an4_lang.dir / "words.txt").read_text()
    refs = {f"u{i}": words for i, words in enumerate(SENTENCES)}
    matrices = {u: _favouring_matrix(tm, ctx_dep, an4_lang, words, 25, i) for i, (u, words) in enumerate(refs.items())}
    hyps = decode_set(str(hclg_path), ((u, khg.DecodableCtc(m)) for u, m in matrices.items()),
                      tmp_path / "graph" / "words.txt", beam=13.0)
    assert hyps == refs
    # The lattice decoder (with the transition model) and an id->word table agree.
    hclg = kaldifst.StdVectorFst.read(str(hclg_path))
    hyps_lat = decode_set(hclg, ((u, khg.DecodableCtc(m)) for u, m in matrices.items()),
                          dict(enumerate(an4_lang.word_names)), trans_model=tm)
    assert hyps_lat == refs
    assert compute_wer(refs, hyps)["wer"] == 0.0


def test_decode_without_evidence_for_the_words_is_wrong(an4_lang, tmp_path):
    """Control: the same decoder on a matrix for other words does not output the reference."""
    tm, ctx_dep = _model_dir(tmp_path / "mono", an4_lang, "mono")
    hclg = make_graph(an4_lang.dir, tmp_path / "mono", tmp_path / "graph")
    m = _favouring_matrix(tm, ctx_dep, an4_lang, ["NINE", "ZERO"], 25, 0)
    hyps = decode_set(hclg, [("u", khg.DecodableCtc(m))], an4_lang.words)
    assert hyps["u"] == ["NINE", "ZERO"]
    assert compute_wer({"u": "TWO FIVE"}, hyps) == {
        "wer": 100.0, "errors": 2, "ins": 0, "del": 0, "sub": 2, "words": 2, "sentences": 1,
        "sentence_errors": 1, "ser": 100.0, "missing": 0}


def test_trained_trigram_g(an4_lang, tmp_path):
    texts = [" ".join(s) for s in SENTENCES] * 3 + ["TWO FIVE SEVEN", "NO H E L P"]
    arpa = train_ngram_lm(texts, tmp_path / "lm.arpa", order=3)
    header = arpa.read_text(encoding="latin-1")
    assert "\\3-grams:" in header and "ngram 3=" in header
    g = make_g_fst(arpa, an4_lang.dir / "words.txt", tmp_path / "G.fst")
    labels = {arc.ilabel for s in kaldifst.StateIterator(g) for arc in kaldifst.ArcIterator(g, s)}
    assert an4_lang.words["#0"] in labels                  # back-off arcs
    assert an4_lang.words["<s>"] not in labels and an4_lang.words["</s>"] not in labels
    assert max(labels) < len(an4_lang.word_names)

    def cost(words):
        acceptor = kaldifst.make_linear_acceptor([an4_lang.words[w] for w in words])
        # #0 self-loops let the sentence take G's back-off arcs (as L_disambig's do).
        kaldifst.add_self_loops(acceptor, [an4_lang.words["#0"]], [an4_lang.words["#0"]])
        kaldifst.arcsort(acceptor, sort_type="olabel")
        best = kaldifst.shortest_path(kaldifst.compose(acceptor, g))
        ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(best)
        return weight.value if best.num_states else float("inf")

    seen, unseen = cost(["TWO", "FIVE"]), cost(["FIVE", "TWO"])
    assert seen < unseen < float("inf")                    # an unseen bigram only via back-off
    assert cost(["ZERO"]) == float("inf")                  # not in the LM's vocabulary

    # Lexicon words the LM never saw become unigrams with its smallest unigram probability.
    assert extend_lm_vocabulary(arpa, ["TWO", "ZERO", "NINE", "ZERO"], tmp_path / "lm2.arpa") == 2
    extended = (tmp_path / "lm2.arpa").read_text(encoding="latin-1")
    assert f"ngram 1={int(header.split('ngram 1=')[1].split()[0]) + 2}" in extended
    g = make_g_fst(tmp_path / "lm2.arpa", an4_lang.dir / "words.txt", tmp_path / "G2.fst")
    assert cost(["TWO", "FIVE"]) == pytest.approx(seen, abs=1e-3)
    assert seen < cost(["ZERO"]) < float("inf") and cost(["ZERO", "NINE"]) < float("inf")


def test_compute_wer_counts():
    refs = {"a": "A B C D", "b": ["E", "F"], "c": "G"}
    hyps = {"a": "A X C D E", "b": [], "extra": ["Z"]}
    r = compute_wer(refs, hyps)
    assert (r["ins"], r["del"], r["sub"], r["words"], r["sentences"], r["sentence_errors"], r["missing"]) == \
        (1, 3, 1, 7, 3, 3, 1)
    assert r["wer"] == round(100 * 5 / 7, 2)
