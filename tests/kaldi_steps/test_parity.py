"""Kaldi parity: the project's AN4 lang against real Kaldi's, and ``kaldi-parity`` on real Kaldi
alignments (``shared/fixtures/kaldi_an4_reference``), checked against facts Kaldi's own tools wrote."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import gzip
import json
import shutil

import kaldifst
import numpy as np
import pytest
from click.testing import CliRunner

from weakalign.kaldi_steps.kaldi_io import read_ali_dir, write_ali_archive
from weakalign.kaldi_steps.parity import AlignmentDir, kaldi_parity
from weakalign.kaldi_steps.transitions import read_phones_txt, strip_position
from weakalign.pipeline.cli import cli

# --- the lang ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["phones.txt", "words.txt", "topo", "oov.txt", "phones/roots.int", "phones/sets.int",
                                  "phones/extra_questions.int", "phones/silence.int", "phones/disambig.int",
                                  "phones/word_boundary.int", "phones/optional_silence.int"])
def test_project_lang_file_equals_kaldis(an4_lang, kaldi_an4_dir, name):
    assert (an4_lang.dir / name).read_bytes() == (kaldi_an4_dir / "lang" / name).read_bytes()


def _arcs_by_state(path):
    """Per state: its final weight and its sorted arcs (ilabel, olabel, next state, weight to 1e-5);
    sorted because ``fstarcsort`` leaves arcs with equal olabels in the order they were added."""
    fst = kaldifst.StdVectorFst.read(str(path))
    return [(round(fst.final(s).value, 5),
             sorted((a.ilabel, a.olabel, a.nextstate, round(a.weight.value, 5) + 0.0)
                    for a in kaldifst.ArcIterator(fst, s)))
            for s in range(fst.num_states)], fst.start


@pytest.mark.parametrize("name", ["L.fst", "L_disambig.fst"])
def test_project_lexicon_fst_equals_kaldis_up_to_float_rounding(an4_lang, kaldi_an4_dir, name):
    ours, kaldis = _arcs_by_state(an4_lang.dir / name), _arcs_by_state(kaldi_an4_dir / "lang" / name)
    assert ours == kaldis


def test_project_align_lexicon_differs_from_kaldis_only_by_the_eps_line_and_order(an4_lang, kaldi_an4_dir):
    """Where the langs do differ: Kaldi's prepare_lang.sh adds ``<eps> <eps> SIL`` to align_lexicon.txt
    and sorts it in C order; the project writes neither (words in words.txt order, ``<sil>`` and
    ``<UNK>`` last, a word's variants in lexicon order)."""
    ours = (an4_lang.dir / "phones" / "align_lexicon.txt").read_text().splitlines()
    kaldis = (kaldi_an4_dir / "lang" / "phones" / "align_lexicon.txt").read_text().splitlines()
    assert set(kaldis) - set(ours) == {"<eps> <eps> SIL"} and set(ours) < set(kaldis)
    assert kaldis == sorted(kaldis) and ours != sorted(ours)


def test_project_lang_lacks_only_kaldis_csl_and_wdisambig_files(an4_lang, kaldi_an4_dir):
    """Kaldi's phones/ also holds colon-separated copies (*.csl) and the wdisambig files; the project
    does not write them. Its extra_questions.txt lines lack Kaldi's trailing space (the .int is equal)."""
    ours = {p.name for p in (an4_lang.dir / "phones").iterdir()}
    kaldis = {p.name for p in (kaldi_an4_dir / "lang" / "phones").iterdir()}
    assert ours < kaldis
    assert kaldis - ours == {f"{n}.csl" for n in ("context_indep", "disambig", "nonsilence", "optional_silence",
                                                  "silence")} | {"wdisambig.txt", "wdisambig_phones.int",
                                                                 "wdisambig_words.int"}
    name = "phones/extra_questions.txt"
    assert [line.rstrip() for line in (kaldi_an4_dir / "lang" / name).read_text().splitlines()] == \
        (an4_lang.dir / name).read_text().splitlines()


# --- kaldi-parity on real Kaldi alignments -----------------------------------------------------


@pytest.fixture(scope="module")
def kaldi_mono_vs_tri1(kaldi_an4_dir):
    """Kaldi's mono_ali (A) against Kaldi's tri1_ali (B) on train, words named from Kaldi's text."""
    return kaldi_parity(kaldi_an4_dir / "mono_ali", kaldi_an4_dir / "tri1_ali", lang_dir=kaldi_an4_dir / "lang",
                        text=kaldi_an4_dir / "feats" / "train" / "text")


def _per_frame_phones(path, names):
    """``ali-to-phones --per-frame`` output (gzipped text) as marker-free names per utterance."""
    with gzip.open(path, "rt") as f:
        return {fields[0]: [strip_position(names[int(p)]) for p in fields[1:]] for fields in map(str.split, f)}


def _ctm_sequences(path):
    """Marker-free phone sequences per utterance from Kaldi's phone CTM."""
    seqs = {}
    with open(path) as f:
        for utt, _, _, _, phone in map(str.split, f):
            seqs.setdefault(utt, []).append(strip_position(phone))
    return seqs


def test_kaldi_tri1_against_itself_agrees_completely(kaldi_an4_dir):
    tri1 = kaldi_an4_dir / "tri1_ali"
    report = kaldi_parity(tri1, tri1)
    frames, bounds = report["frame_agreement"], report["boundaries"]
    assert report["utterances"]["common"] == 845 and frames["frames"] == 225450
    assert frames["phones_pct"] == frames["pdfs_pct"] == 100.0
    assert report["phone_sequence"]["same_pct"] == 100.0
    assert bounds["mean_abs_ms"] == bounds["mean_signed_ms"] == 0.0 and bounds["pct_exact"] == 100.0
    assert report["pronunciations"]["utterances_different"] == 0


def test_frame_agreement_matches_kaldis_per_frame_phones(kaldi_mono_vs_tri1, kaldi_an4_dir):
    names = read_phones_txt(kaldi_an4_dir / "lang" / "phones.txt")
    mono = _per_frame_phones(kaldi_an4_dir / "per_frame_phones" / "mono_ali_train.txt.gz", names)
    tri1 = _per_frame_phones(kaldi_an4_dir / "per_frame_phones" / "tri1_ali_train.txt.gz", names)
    same = sum(x == y for u in mono for x, y in zip(mono[u], tri1[u]))
    frames = sum(len(v) for v in mono.values())
    report = kaldi_mono_vs_tri1["frame_agreement"]
    assert report["frames"] == frames == 225450
    assert report["phones_pct"] == round(100 * same / frames, 2)
    assert report["phones_pct"] == pytest.approx(95.6, abs=0.05)    # the fixture README's figure
    assert report["pdfs_pct"] is None and "different trees" in report["pdfs_note"]


def test_segments_and_sequences_match_kaldis_ctms(kaldi_mono_vs_tri1, kaldi_an4_dir):
    mono = _ctm_sequences(kaldi_an4_dir / "ctm" / "mono_ali_train.ctm")
    tri1 = _ctm_sequences(kaldi_an4_dir / "ctm" / "tri1_ali_train.ctm")
    assert kaldi_mono_vs_tri1["phone_segments"] == {"a": 15082, "b": 15208}
    same = sum(mono[u] == tri1[u] for u in mono)
    no_sil = {u: [p for p in s if p != "SIL"] for u, s in mono.items()}, {u: [p for p in s if p != "SIL"]
                                                                          for u, s in tri1.items()}
    differ_no_sil = sum(no_sil[0][u] != no_sil[1][u] for u in mono)
    seq = kaldi_mono_vs_tri1["phone_sequence"]
    assert seq["same_pct"] == round(100 * same / 845, 2)
    assert seq["same_without_silence_pct"] == round(100 * (845 - differ_no_sil) / 845, 2)
    # Without silence the phone sequences differ only where some word got another pronunciation.
    prons = kaldi_mono_vs_tri1["pronunciations"]
    assert prons["utterances_different"] == differ_no_sil == 22
    assert prons["top_pairs_a_vs_b"][0] == "ONE: W AH N vs HH W AH N (8)"


def test_boundaries_match_the_fixtures_comparison_with_kaldis_tools(kaldi_mono_vs_tri1, kaldi_an4_dir):
    """compare/kaldi_mono_vs_kaldi_tri1.json was computed from Kaldi's ali-to-phones CTMs with A = mono:
    its signed A - B is our -(B - A)."""
    fixture = json.loads((kaldi_an4_dir / "compare" / "kaldi_mono_vs_kaldi_tri1.json").read_text())
    ours = kaldi_mono_vs_tri1["boundaries"]
    assert ours["n"] == fixture["boundaries_matched_segments"]["n"]
    assert ours["mean_abs_ms"] == fixture["boundaries_matched_segments"]["mean_abs_ms"]
    assert ours["pct_within_10ms"] == fixture["boundaries_matched_segments"]["pct_le_10ms"]
    assert ours["pct_within_20ms"] == fixture["boundaries_matched_segments"]["pct_le_20ms"]
    assert ours["mean_signed_ms"] == -fixture["signed_mean_onset_A_minus_B_ms"]
    assert ours["pct_b_later"] == fixture["pct_onsets_A_earlier"]


# --- a hand-made pair with a known shift -------------------------------------------------------

SHIFTED_UTTS = ["fash-an251-fash-b", "fash-an253-fash-b", "fash-an254-fash-b"]


def _one_frame_later(ali, tables):
    """The same alignment with every phone boundary one frame later: one more self-loop in the
    first phone (leading silence), one fewer in the last (trailing silence)."""
    loops = np.nonzero(tables.is_self_loop[ali])[0]
    first, last = loops[0], loops[-1]
    assert tables.phone[ali[first]] == tables.phone[ali[0]] and tables.phone[ali[last]] == tables.phone[ali[-1]]
    shifted = np.insert(np.delete(ali, last), first, ali[first])
    assert len(shifted) == len(ali)
    return shifted


def _ali_dir(path, source, alignments):
    path.mkdir()
    for name in ("final.mdl", "tree", "phones.txt"):
        shutil.copy(source / name, path / name)
    write_ali_archive(path / "ali.1.gz", sorted(alignments.items()))
    return path


@pytest.fixture()
def shifted_pair(tmp_path, kaldi_an4_dir):
    """(A, B): three real Kaldi tri1 alignments, and the same with every boundary one frame later."""
    source = kaldi_an4_dir / "tri1_ali"
    tables = AlignmentDir.load(source).model.tables
    real = {u: ali for u, ali in read_ali_dir(source).items() if u in SHIFTED_UTTS}
    later = {u: _one_frame_later(ali, tables) for u, ali in real.items()}
    return _ali_dir(tmp_path / "a", source, real), _ali_dir(tmp_path / "b", source, later)


def test_one_frame_later_is_plus_10_ms(shifted_pair):
    a, b = shifted_pair
    bounds = kaldi_parity(a, b)["boundaries"]
    assert bounds["n"] > 10
    assert bounds["mean_signed_ms"] == bounds["mean_abs_ms"] == 10.0
    assert bounds["pct_b_later"] == bounds["pct_within_10ms"] == 100.0 and bounds["pct_exact"] == 0.0
    assert kaldi_parity(b, a)["boundaries"]["mean_signed_ms"] == -10.0


def test_utterances_in_one_dir_only_are_counted_and_ids_match_without_speaker_prefix(shifted_pair, tmp_path,
                                                                                    kaldi_an4_dir):
    a, _ = shifted_pair
    # The project's AN4 ids lack Kaldi's "<speaker>-" prefix; one of its utterances is not in B.
    alignments = {u.split("-", 1)[1]: ali for u, ali in read_ali_dir(a).items()}
    alignments["an999-fash-b"] = alignments["an251-fash-b"]
    project = _ali_dir(tmp_path / "project", kaldi_an4_dir / "tri1_ali", alignments)
    kaldi = _ali_dir(tmp_path / "kaldi", kaldi_an4_dir / "tri1_ali",
                     {u: ali for u, ali in read_ali_dir(a).items() if u != SHIFTED_UTTS[2]})
    utts = kaldi_parity(project, kaldi)["utterances"]
    assert utts["ids_matched"] == "B ids are <prefix>-<A id>"
    assert (utts["common"], utts["only_in_a"], utts["only_in_b"]) == (2, 2, 0)
    assert utts["only_in_a_examples"] == ["an254-fash-b", "an999-fash-b"]


def test_cli_prints_the_table_and_writes_the_json(shifted_pair, tmp_path):
    a, b = shifted_pair
    out = tmp_path / "parity.json"
    result = CliRunner().invoke(cli, ["kaldi-parity", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "+10.0 ms (positive: B later)" in result.output
    assert json.loads(out.read_text())["boundaries"]["mean_signed_ms"] == 10.0
    missing = CliRunner().invoke(cli, ["kaldi-parity", str(tmp_path), str(b)])
    assert missing.exit_code == 1 and "no final.mdl" in missing.output
