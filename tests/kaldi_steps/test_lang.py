"""Lang preparation: phones/words/disambiguation, lexicon FSTs, topology, the lang stage."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import json
import math

import kaldifst
import pytest

from weakalign.kaldi_steps.kaldi_io import Topology
from weakalign.kaldi_steps.lang import Lang, lang_stage, prepare_lang, read_lexicon
from weakalign.pipeline.report import SkipReport
from weakalign.pipeline.workspace import Workspace

TOY_LEXICON = """\
;;; a CMUdict-style toy lexicon
EIGHT  EY1 T
ATE  EY1 T
A  AH0
A(2)  EY1
AN  AE1 N
AND  AE1 N D
"""


@pytest.fixture()
def toy_lang(tmp_path) -> Lang:
    (tmp_path / "lexicon.txt").write_text(TOY_LEXICON)
    return prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang")


def test_read_lexicon_formats(tmp_path):
    (tmp_path / "cmu.dict").write_text(TOY_LEXICON)
    assert read_lexicon(tmp_path / "cmu.dict")[2:4] == [("A", ["AH0"]), ("A", ["EY1"])]
    (tmp_path / "lexiconp.txt").write_text("HELLO 1.0 HH AH0 L OW1\nHELLO 0.5 HH EH1 L OW1\n")
    assert read_lexicon(tmp_path / "lexiconp.txt") == [("HELLO", ["HH", "AH0", "L", "OW1"]),
                                                       ("HELLO", ["HH", "EH1", "L", "OW1"])]
    # Lower-case lexicons (TED-LIUM's) are upper-cased like the transcripts; <tokens> are kept.
    (tmp_path / "lower.dic").write_text("hello HH AH0 L OW1\nhello(2) HH EH1 L OW1\nHello HH AH0 L OW1\n<unk> SPN\n")
    lower = prepare_lang(tmp_path / "lower.dic", tmp_path / "lower_lang")
    assert lower.word_names == ["<eps>", "<UNK>", "<unk>", "HELLO", "#0", "<s>", "</s>"]
    assert sum(line.startswith("HELLO ") for line in
               (lower.dir / "phones" / "align_lexicon.txt").read_text().splitlines()) == 2
    (tmp_path / "bad.txt").write_text("GOOD G UH1 D\nEMPTY\n")
    report = SkipReport("lang")
    assert read_lexicon(tmp_path / "bad.txt", report) == [("GOOD", ["G", "UH1", "D"])]
    assert report.count == 1 and "EMPTY" in report.items[0][1]


def test_toy_phones_words_and_disambiguation(toy_lang):
    lang = toy_lang
    names = lang.phone_names
    assert names[:6] == ["<eps>", "SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S"]
    assert names[6:11] == ["SPN", "SPN_B", "SPN_E", "SPN_I", "SPN_S"]
    # Stress variants of a phone share one root, with all their position variants.
    ey_root = [r for r in lang.roots if lang.phones["EY1_B"] in r[0]]
    assert len(ey_root) == 1 and ey_root[0][1:] == (True, True)
    assert sorted(names[p] for p in ey_root[0][0]) == ["EY1_B", "EY1_E", "EY1_I", "EY1_S"]
    ah_root = [r for r in lang.roots if lang.phones["AH0_S"] in r[0]][0]
    assert "AE1_B" not in {names[p] for p in ah_root[0]}
    assert lang.sets == [r[0] for r in lang.roots]
    # EIGHT/ATE are homophones (#1, #2); +1 for silence; +#0.
    assert [names[p] for p in lang.disambig_phone_ids] == ["#0", "#1", "#2", "#3"]
    assert lang.word_names == ["<eps>", "<UNK>", "A", "AN", "AND", "ATE", "EIGHT", "#0", "<s>", "</s>"]
    assert lang.oov_word == "<UNK>" and lang.oov_id == 1
    assert sorted(names[p] for p in lang.silence_phone_ids) == sorted(names[1:11])
    assert names[lang.optional_silence_id] == "SIL"
    assert lang.context_indep_ids == lang.silence_phone_ids
    assert lang.word_boundary[lang.phones["AE1_B"]] == "begin" and lang.word_boundary[1] == "nonword"
    # Extra questions: silence, unstressed phones, one per stress level, then word positions.
    eq = [{names[p] for p in q} for q in lang.extra_questions]
    assert eq[0] == {names[p] for p in lang.silence_phone_ids}
    assert {p[:-2] for p in eq[1]} == {"T", "N", "D"}
    assert {p[:-2] for p in eq[2]} == {"AH0"}
    assert {p[:-2] for p in eq[3]} == {"AE1", "EY1"}
    assert {"AH0_B", "AE1_B", "EY1_B", "T_B", "N_B", "D_B"} in eq


def test_topology_is_kaldis_standard(toy_lang):
    topo = Topology.from_text(toy_lang.topo_text)
    ae = topo.for_phone(toy_lang.phones["AE1_B"])
    assert len(ae) == 4 and [s.transitions for s in ae[:3]] == [[(0, 0.75), (1, 0.25)], [(1, 0.75), (2, 0.25)],
                                                                 [(2, 0.75), (3, 0.25)]]
    sil = topo.for_phone(toy_lang.phones["SIL"])
    assert len(sil) == 6 and [d for d, _ in sil[0].transitions] == [0, 1, 2, 3]
    # Our text writer gives the same topology back, also through kaldi_hmm_gmm's reader.
    assert Topology.from_text(topo.to_text()) == topo
    again = khg.HmmTopology()
    again.read(topo.to_text())
    assert again.get_phone_to_num_pdf_classes() == toy_lang.topo().get_phone_to_num_pdf_classes()
    khg_topo = toy_lang.topo()
    assert list(khg_topo.phones) == toy_lang.real_phone_ids
    assert khg_topo.num_pdf_classes(toy_lang.phones["SIL_B"]) == 5
    assert khg_topo.num_pdf_classes(toy_lang.phones["T_E"]) == 3


def _paths(fst) -> set[tuple[tuple[int, ...], tuple[int, ...], float]]:
    """All (input labels, output labels, cost) of an acyclic FST."""
    found = set()

    def walk(state, ilabels, olabels, cost):
        final = fst.final(state)
        if final.value != math.inf:
            found.add((tuple(ilabels), tuple(olabels), round(cost + final.value, 4)))
        for arc in kaldifst.ArcIterator(fst, state):
            walk(arc.nextstate, ilabels + ([arc.ilabel] if arc.ilabel else []),
                 olabels + ([arc.olabel] if arc.olabel else []), cost + arc.weight.value)

    walk(fst.start, [], [], 0.0)
    return found


def test_lexicon_disambig_fst_gives_word_phone_sequences_with_optional_silence(toy_lang):
    lang = toy_lang
    words = ["EIGHT", "AN"]
    acceptor = kaldifst.make_linear_acceptor(lang.words_to_ids(words))
    composed = kaldifst.compose(lang.lexicon_fst_disambig(), acceptor)
    paths = _paths(composed)
    name = lang.phone_names
    seqs = {tuple(name[p] for p in i) for i, o, _ in paths}
    sil_dis = name[lang.disambig_phone_ids[-1]]

    def opt_sil(before):
        return [before, before + ["SIL", sil_dis]]

    expected = set()
    for start in opt_sil([]):
        for after_eight in opt_sil(start + ["EY1_B", "T_E", "#1"]):
            # AN is no prefix of AND once word positions are marked (N_E vs N_I): no #n.
            for after_an in opt_sil(after_eight + ["AE1_B", "N_E"]):
                expected.add(tuple(after_an))
    assert seqs == expected
    assert all(o == tuple(lang.words_to_ids(words)) for _, o, _ in paths)
    # Each optional silence costs -log(0.5) whether taken or not: 3 decisions.
    assert {c for *_, c in paths} == {round(3 * math.log(2), 4)}
    # ATE, the homophone of EIGHT, gets #2.
    ate = _paths(kaldifst.compose(lang.lexicon_fst_disambig(), kaldifst.make_linear_acceptor([lang.words["ATE"]])))
    assert ("EY1_B", "T_E", "#2") in {tuple(name[p] for p in i) for i, _, _ in ate}
    # The plain L has no disambiguation symbols.
    plain = _paths(kaldifst.compose(lang.lexicon_fst(), acceptor))
    assert {tuple(name[p] for p in i) for i, _, _ in plain} == {
        tuple(p for p in s if not p.startswith("#")) for s in expected}


def test_words_to_ids_maps_oovs_to_unk_and_reports(toy_lang):
    report = SkipReport("mono")
    ids = toy_lang.words_to_ids(["A", "ZEBRA", "AND", "<s>"], report, "utt7")
    assert ids == [toy_lang.words["A"], toy_lang.oov_id, toy_lang.words["AND"], toy_lang.oov_id]
    assert toy_lang.oov_counts == {"ZEBRA": 1, "<s>": 1}


def test_training_graph_compiler_accepts_an4_lexicon(an4_lang):
    lang = an4_lang
    assert "<UNK>" in lang.words and "<sil>" in lang.words
    assert lang.phone_names[lang.optional_silence_id] == "SIL"
    topo = lang.topo()
    ctx_dep = khg.monophone_context_dependency_shared([r[0] for r in lang.roots],
                                                      topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx_dep, topo)
    assert tm.num_pdfs == 2 * 5 + 3 * (len(lang.roots) - 2)
    compiler = khg.TrainingGraphCompiler(tm, ctx_dep, lang.lexicon_fst_disambig(), lang.disambig_phone_ids,
                                         khg.TrainingGraphCompilerOptions())
    words = "A N D EIGHTEEN TWENTY ENTER".split()
    graph = compiler.compile_graph_from_text(lang.words_to_ids(words))
    assert graph.num_states > 0
    ok, path = kaldifst.equal_align(graph, 300, 0)
    assert ok
    ok, tids, olabels, _ = kaldifst.get_linear_symbol_sequence(path)
    assert [lang.word_names[w] for w in olabels] == words
    # One transition into the final HMM state per phone instance.
    phones = [lang.phone_names[tm.transition_id_to_phone(t)] for t in tids if tm.is_final(t)]
    real = [p for p in phones if p != "SIL"]
    assert real[:3] == ["AH_S", "EH_B", "N_E"] or real[:3] == ["EY_S", "EH_B", "N_E"]


def test_lang_stage_counts_oovs(corpora_dir, tmp_path):
    from lhotse import SupervisionSegment, SupervisionSet

    ws = Workspace("toy", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    sups = SupervisionSet.from_segments([
        SupervisionSegment("u1", "r1", 0.0, 1.0, text="A B C", speaker="s1"),
        SupervisionSegment("u2", "r2", 0.0, 1.0, text="A QUUX B QUUX", speaker="s1"),
    ])
    ws.manifest("supervisions", "train").parent.mkdir(parents=True)
    sups.to_file(ws.manifest("supervisions", "train"))
    summary = lang_stage(ws, lexicon=corpora_dir / "an4" / "etc" / "an4.dic")
    train = summary["oov"]["train"]
    assert (train["words"], train["oov_tokens"], train["oov_types"], train["utterances_with_oov"]) == (7, 2, 1, 1)
    assert train["top_oovs"] == {"QUUX": 2}
    lang = Lang.load(ws.lang)
    assert len(lang.words) == summary["words"] + 4
    assert all(p.exists() for p in summary["outputs"])


def test_an4_lang_stage_on_slice(an4_lang, an4_slice):
    marker = json.loads((an4_slice.done_dir / "lang.json").read_text())
    assert marker["summary"]["lexicon"].endswith("an4.dic")
    for split in ("train", "dev", "test"):
        assert marker["summary"]["oov"][split]["words"] > 0
    # an4.dic covers the AN4 transcripts.
    assert marker["summary"]["oov"]["train"]["oov_tokens"] == 0
    # G (from AN4's unigram LM) has every spoken lexicon word: the decoder can output them all.
    arpa = (an4_lang.dir / "lm.arpa").read_text(encoding="latin-1")
    unigrams = {line.split()[1] for line in arpa.split("\\1-grams:")[-1].split("\\end\\")[0].splitlines()
                if len(line.split()) >= 2}
    spoken = set(an4_lang.word_names) - {"<eps>", "#0", "<s>", "</s>", "<sil>", "<UNK>"}
    assert spoken <= unigrams
    assert (an4_lang.dir / "G.fst").exists()


def test_position_independent_lang(tmp_path):
    (tmp_path / "lexicon.txt").write_text(TOY_LEXICON)
    lang = prepare_lang(tmp_path / "lexicon.txt", tmp_path / "lang", position_dependent=False)
    assert lang.phone_names[1:3] == ["SIL", "SPN"]
    assert not any(p.endswith(("_B", "_E", "_I", "_S")) for p in lang.phone_names)
    assert [lang.phone_names[p] for p in lang.roots[2][0]] == ["AE1"]
    # Without word positions AN (AE1 N) is a prefix of AND (AE1 N D): it needs #1.
    align = (lang.dir / "phones" / "align_lexicon.txt").read_text().splitlines()
    assert "AN AN AE1 N" in align
    composed = kaldifst.compose(lang.lexicon_fst_disambig(), kaldifst.make_linear_acceptor([lang.words["AN"]]))
    assert ("AE1", "N", "#1") in {tuple(lang.phone_names[p] for p in i) for i, _, _ in _paths(composed)}
