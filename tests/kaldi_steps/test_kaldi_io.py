"""Kaldi binary I/O on real Kaldi-written models (MFA test data) and the khg bridges."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import gzip

import kaldifst

import numpy as np
import pytest

from weakalign.kaldi_steps import kaldi_io as kio

MODEL_FILES = ["mono_model/final.mdl", "acoustic_g2p_output_model/final.mdl",
               "acoustic_g2p_output_model/final.alimdl"]
TREE_FILES = ["mono_model/tree", "acoustic_g2p_output_model/tree"]
MODEL_DIRS = ["mono_model", "acoustic_g2p_output_model"]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_parses_completely_and_writes_back_byte_identical(kaldi_models_dir, name):
    path = kaldi_models_dir / name
    model = kio.parse_model(path)
    tm, am = model.transition_model, model.am_gmm
    assert tm.num_pdfs == am.num_pdfs > 0
    assert len(tm.log_probs) == tm.num_transition_ids + 1
    assert all(p.means_invvars.shape == (p.num_gauss, am.dim) for p in am.pdfs)
    assert all(abs(float(p.weights.sum()) - 1.0) < 1e-4 for p in am.pdfs)
    assert kio.model_to_bytes(model) == path.read_bytes()


@pytest.mark.parametrize("name", TREE_FILES)
def test_tree_parses_and_writes_back_byte_identical(kaldi_models_dir, name):
    path = kaldi_models_dir / name
    tree = kio.parse_tree(path)
    assert sorted(set(tree.leaves())) == list(range(tree.num_pdfs))
    assert kio.tree_to_bytes(tree) == path.read_bytes()


@pytest.mark.parametrize("name", TREE_FILES)
def test_text_tree_is_byte_identical_to_kaldis_text_writer(kaldi_models_dir, tmp_path, name):
    parsed = kio.parse_tree(kaldi_models_dir / name)
    kio.read_tree(kaldi_models_dir / name).write(False, str(tmp_path / "tree.txt"))  # Kaldi's C++ writer
    kaldi_text = (tmp_path / "tree.txt").read_bytes()
    assert kio.tree_to_bytes(parsed, binary=False) == kaldi_text
    assert kio.parse_tree(tmp_path / "tree.txt") == parsed


@pytest.mark.parametrize("name", MODEL_FILES[:2])
def test_text_model_round_trip(kaldi_models_dir, tmp_path, name):
    model = kio.parse_model(kaldi_models_dir / name)
    kio.save_model(tmp_path / "text.mdl", model, binary=False)
    text = (tmp_path / "text.mdl").read_bytes()
    assert text.startswith(b"<TransitionModel> \n<Topology> \n<TopologyEntry> \n<ForPhones> \n")
    again = kio.parse_model(tmp_path / "text.mdl")
    np.testing.assert_array_equal(again.transition_model.tuples, model.transition_model.tuples)
    # Text mode keeps 6 significant digits, as Kaldi's --binary=false.
    np.testing.assert_allclose(again.transition_model.log_probs, model.transition_model.log_probs, rtol=1e-5)
    for a, b in zip(model.am_gmm.pdfs, again.am_gmm.pdfs):
        np.testing.assert_allclose(b.means_invvars, a.means_invvars, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.inv_vars, a.inv_vars, rtol=1e-5)
        np.testing.assert_allclose(b.gconsts, a.gconsts, rtol=1e-5)
    assert kio.model_to_bytes(again, binary=False) == text


def test_text_occs_round_trip_and_binary_vector(kaldi_models_dir, tmp_path):
    path = kaldi_models_dir / "mono_model" / "final.occs"
    occs = kio.read_kaldi_vector(path)
    assert occs.shape == (kio.parse_model(kaldi_models_dir / "mono_model" / "final.mdl").am_gmm.num_pdfs,)
    assert kio.vector_to_bytes(occs, binary=False) == path.read_bytes()
    kio.write_kaldi_vector(tmp_path / "occs", occs)
    assert (tmp_path / "occs").read_bytes()[:5] == b"\0BFV "
    np.testing.assert_array_equal(kio.read_kaldi_vector(tmp_path / "occs"), occs)


@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_parsed_transition_model_agrees_with_khg_built_from_tree_and_topology(kaldi_models_dir, model_dir):
    parsed = kio.parse_model(kaldi_models_dir / model_dir / "final.mdl").transition_model
    ctx_dep = kio.read_tree(kaldi_models_dir / model_dir / "tree")
    built = khg.TransitionModel(ctx_dep, kio.topology_to_khg(parsed.topo))
    assert built.num_transition_ids == parsed.num_transition_ids
    assert built.num_pdfs == parsed.num_pdfs
    tuples = np.array([t.__getstate__() for t in built.tuples])
    np.testing.assert_array_equal(tuples, parsed.tuples)  # (phone, hmm-state, forward pdf, self-loop pdf)
    for tid in range(1, parsed.num_transition_ids + 1):
        assert built.transition_id_to_pdf(tid) == parsed.id2pdf[tid]
        assert built.transition_id_to_phone(tid) == parsed.tuples[parsed.id2state[tid] - 1, 0]
        assert built.is_self_loop(tid) == parsed.id_is_self_loop[tid]
    # Log-probs: khg's TransitionModel read through our reader carries the trained values.
    read_tm, _ = kio.read_model(kaldi_models_dir / model_dir / "final.mdl")
    np.testing.assert_array_equal(np.array(read_tm.log_probs, dtype=np.float32), parsed.log_probs)
    np.testing.assert_allclose(np.array(read_tm.non_self_loop_log_probs), parsed.non_self_loop_log_probs(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_khg_model_round_trip(kaldi_models_dir, tmp_path, model_dir):
    src = kaldi_models_dir / model_dir / "final.mdl"
    tm, am = kio.read_model(src)
    original = kio.parse_model(src)
    assert am.num_pdfs == original.am_gmm.num_pdfs and am.dim == original.am_gmm.dim
    kio.write_model(tmp_path / "final.mdl", tm, am)
    again = kio.parse_model(tmp_path / "final.mdl")
    # The transition model and all GMM parameters come back exactly; the gconsts are
    # recomputed by kaldi_hmm_gmm and may differ in the last bit.
    assert kio.model_to_bytes(kio.GmmModel(again.transition_model, original.am_gmm)) == src.read_bytes()
    for a, b in zip(original.am_gmm.pdfs, again.am_gmm.pdfs):
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.means_invvars, b.means_invvars)
        np.testing.assert_array_equal(a.inv_vars, b.inv_vars)
        np.testing.assert_allclose(a.gconsts, b.gconsts, rtol=1e-6, atol=1e-4)
    # The khg GMM evaluates like our parsed parameters.
    feats = np.random.default_rng(0).normal(size=(3, am.dim)).astype(np.float32)
    pdf = original.am_gmm.pdfs[0]
    diff = feats[:, None, :] - pdf.means[None]
    ours = np.logaddexp.reduce(np.log(pdf.weights) - 0.5 * am.dim * np.log(2 * np.pi)
                               + 0.5 * np.log(pdf.inv_vars).sum(1) - 0.5 * (diff ** 2 * pdf.inv_vars).sum(2), axis=1)
    theirs = [am.log_likelihood(0, f) for f in feats]
    np.testing.assert_allclose(theirs, ours, rtol=1e-4)


@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_khg_tree_round_trip_and_pdf_lookup(kaldi_models_dir, tmp_path, model_dir):
    src = kaldi_models_dir / model_dir / "tree"
    ctx_dep = kio.read_tree(src)
    kio.write_tree(tmp_path / "tree", ctx_dep)
    assert (tmp_path / "tree").read_bytes() == src.read_bytes()
    parsed = kio.parse_tree(src)
    assert (ctx_dep.context_width, ctx_dep.central_position, ctx_dep.num_pdfs) == (parsed.N, parsed.P, parsed.num_pdfs)
    topo = kio.parse_model(kaldi_models_dir / model_dir / "final.mdl").transition_model.topo
    rng = np.random.default_rng(0)
    for _ in range(300):
        window = [int(p) for p in rng.choice(topo.phones, size=parsed.N)]
        pdf_class = int(rng.integers(topo.num_pdf_classes(window[parsed.P])))
        ok, pdf = ctx_dep.compute(window, pdf_class)
        assert ok and pdf == parsed.compute(window, pdf_class)


def test_truncated_model_is_a_clear_error(kaldi_models_dir, tmp_path):
    data = (kaldi_models_dir / "mono_model" / "final.mdl").read_bytes()
    (tmp_path / "bad.mdl").write_bytes(data[: len(data) // 2])
    with pytest.raises(kio.KaldiFormatError, match="bad.mdl"):
        kio.parse_model(tmp_path / "bad.mdl")


def test_ali_archives(tmp_path):
    rng = np.random.default_rng(0)
    alis = {f"utt{i}": rng.integers(1, 500, size=rng.integers(1, 300)).astype(np.int32) for i in range(7)}
    items = sorted(alis.items())
    assert kio.write_ali_archive(tmp_path / "ali.1.gz", items[:4]) == 4
    kio.write_ali_archive(tmp_path / "ali.2.gz", items[4:])
    (tmp_path / "num_jobs").write_text("2\n")
    # Kaldi's Int32VectorWriter layout inside the gzip: "key \0B" + size + int32 per element.
    raw = gzip.open(tmp_path / "ali.1.gz").read()
    first = items[0][1]
    assert raw.startswith(b"utt0 \0B\x04" + len(first).to_bytes(4, "little") + b"\x04"
                          + int(first[0]).to_bytes(4, "little"))
    back = kio.read_ali_dir(tmp_path)
    assert sorted(back) == sorted(alis)
    for utt, ali in alis.items():
        np.testing.assert_array_equal(back[utt], ali)
    assert [u for u, _ in kio.iter_ali_archive(tmp_path / "ali.2.gz")] == [u for u, _ in items[4:]]
    (tmp_path / "num_jobs").write_text("3\n")
    with pytest.raises(FileNotFoundError, match="ali.3.gz"):
        kio.read_ali_dir(tmp_path)
    with pytest.raises(ValueError, match="invalid utterance id"):
        kio.write_ali_archive(tmp_path / "ali.9.gz", [("bad id", first)])
    assert not (tmp_path / "ali.9.gz").exists()



def test_a_damaged_alignment_archive_names_itself_and_where_it_broke(tmp_path):
    """As a Kaldi job killed mid-write leaves it (gzip cut short) or with a changed byte: a
    KaldiFormatError with the archive's path, never gzip's or kaldiio's bare error."""
    rng = np.random.default_rng(0)
    items = [(f"utt{i}", rng.integers(1, 500, size=200).astype(np.int32)) for i in range(6)]
    good = tmp_path / "ali.1.gz"
    kio.write_ali_archive(good, items)
    data, raw = good.read_bytes(), gzip.open(good).read()
    cut = tmp_path / "cut" / "ali.1.gz"
    cut.parent.mkdir()
    for n in range(1, len(data) - 8, max(1, len(data) // 40)):   # up to the gzip trailer
        cut.write_bytes(data[:n])
        with pytest.raises(kio.KaldiFormatError, match=f"{cut}: damaged alignment archive"):
            list(kio.iter_ali_archive(cut))
    # Half-way into the third record: the first two utterances were read.
    third = raw.index(b"utt2 ")
    cut.write_bytes(gzip.compress(raw[:third + 30]))
    with pytest.raises(kio.KaldiFormatError, match=r"after utterance utt1 \(2 read\)"):
        list(kio.iter_ali_archive(cut))
    bad = bytearray(raw)
    bad[raw.index(b"utt3 ") + 6] = ord("X")       # the binary marker 'B' of utt3's vector
    cut.write_bytes(gzip.compress(bytes(bad)))
    with pytest.raises(kio.KaldiFormatError, match=r"after utterance utt2 \(3 read\)"):
        list(kio.iter_ali_archive(cut))


# --- transitions.py: numpy lookups without kaldi_hmm_gmm -------------------------------------

@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_transition_tables_agree_with_khg_for_every_transition_id(kaldi_models_dir, model_dir):
    from weakalign.kaldi_steps.transitions import TransitionTables

    tables = TransitionTables.from_model_file(kaldi_models_dir / model_dir / "final.mdl")
    topo = kio.topology_to_khg(kio.parse_model(kaldi_models_dir / model_dir / "final.mdl").transition_model.topo)
    ref = khg.TransitionModel(kio.read_tree(kaldi_models_dir / model_dir / "tree"), topo)
    assert tables.num_transition_ids == ref.num_transition_ids and tables.num_pdfs == ref.num_pdfs
    tuples = [t.__getstate__() for t in ref.tuples]
    id2state, state2id = list(ref.id2state), list(ref.state2id)
    for tid in range(1, ref.num_transition_ids + 1):
        tstate = id2state[tid]
        phone, hmm_state = tuples[tstate - 1][:2]
        assert tables.pdf[tid] == ref.transition_id_to_pdf(tid)
        assert tables.phone[tid] == ref.transition_id_to_phone(tid) == phone
        assert tables.hmm_state[tid] == hmm_state
        assert tables.transition_index[tid] == tid - state2id[tstate]
        assert tables.is_self_loop[tid] == ref.is_self_loop(tid)
        assert tables.is_final[tid] == ref.is_final(tid)
    ali = np.arange(1, ref.num_transition_ids + 1)
    np.testing.assert_array_equal(tables.pdfs(ali), ref.transition_id_to_pdf_array()[1:])
    with pytest.raises(ValueError, match="outside"):
        tables.pdfs(np.array([ref.num_transition_ids + 1]))


def test_phone_table_names_with_and_without_position(kaldi_models_dir, an4_lang):
    from weakalign.kaldi_steps.transitions import PhoneTable

    ipa = PhoneTable.from_phones_txt(kaldi_models_dir / "acoustic_g2p_output_model" / "phones.txt")
    assert ipa.name(1) == "sil" and ipa.name(1, position=False) == "sil"
    table = PhoneTable.from_phones_txt(an4_lang.dir / "phones.txt")
    ah_b, ah_e, sil, sil_b = (an4_lang.phones[p] for p in ("AH_B", "AH_E", "SIL", "SIL_B"))
    assert (table.name(ah_b), table.name(ah_b, position=False)) == ("AH_B", "AH")
    assert table.base_id[ah_b] == table.base_id[ah_e] != table.base_id[sil] == table.base_id[sil_b]
    assert table.base_inventory[table.base_id[ah_e]] == "AH"
    assert table.base_id[an4_lang.phones["#0"]] == -1 and table.base_id[0] == -1
    assert len(table.base_inventory) == 1 + 2 + len(an4_lang.roots) - 2  # <eps>, SIL, SPN, the rest


def test_split_to_phones_on_a_training_graph_path(an4_lang):
    from weakalign.kaldi_steps.transitions import TransitionTables, split_to_phones, is_reordered

    topo = an4_lang.topo()
    ctx_dep = khg.monophone_context_dependency_shared([r[0] for r in an4_lang.roots],
                                                      topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx_dep, topo)
    tables = TransitionTables.from_transition_model(kio.transition_model_from_khg(tm))
    compiler = khg.TrainingGraphCompiler(tm, ctx_dep, an4_lang.lexicon_fst_disambig(),
                                         an4_lang.disambig_phone_ids, khg.TrainingGraphCompilerOptions())
    graph = compiler.compile_graph_from_text(an4_lang.words_to_ids(["EIGHTEEN", "TWO"]))
    ok, path = kaldifst.equal_align(graph, 120, 3)
    _, tids, _, _ = kaldifst.get_linear_symbol_sequence(path)
    ali = np.array(tids)
    assert is_reordered(ali, tables)  # TrainingGraphCompiler reorders by default, as Kaldi
    segments = split_to_phones(ali, tables)
    names = [an4_lang.phone_names[p] for p, _, _ in segments]
    assert [n for n in names if n != "SIL"] == ["EY_B", "T_I", "IY_I", "N_E", "T_B", "UW_E"]
    assert sum(n for _, _, n in segments) == len(ali)
    for phone, start, n in segments:
        assert (tables.phones(ali[start:start + n]) == phone).all()
        assert tables.hmm_states(ali[start:start + 1])[0] == 0


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
@pytest.mark.parametrize("name", MODEL_FILES + TREE_FILES)
def test_a_damaged_file_is_a_format_error_naming_it_never_a_crash(kaldi_models_dir, tmp_path, name, binary):
    """Real Kaldi files (and their text form) cut short at 60 places and with 60 random bytes changed: each
    one parses (a changed number) or raises KaldiFormatError naming the file, never a bare IndexError,
    KeyError, UnicodeDecodeError or a text number's ValueError."""
    import random

    parse, save = (kio.parse_tree, kio.save_tree) if name.endswith("tree") else (kio.parse_model, kio.save_model)
    data = (kaldi_models_dir / name).read_bytes()
    if not binary:
        save(tmp_path / "text", parse(kaldi_models_dir / name), binary=False)
        data = (tmp_path / "text").read_bytes()
    rng = random.Random(name)
    cases = [data[:n] for n in range(0, len(data), max(1, len(data) // 60))]
    for _ in range(60):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] = rng.randrange(256) if binary else rng.choice(b"0123456789.-e[] \n")
        cases.append(bytes(damaged))
    path = tmp_path / "damaged.mdl"
    errors = 0
    for case in cases:
        path.write_bytes(case)
        try:
            parse(path)
        except kio.KaldiFormatError as e:
            assert str(e).startswith(f"{path}: "), e
            errors += 1
    assert errors >= 60     # at least every truncation
