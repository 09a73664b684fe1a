"""The export stage on the real tri1 alignments of the AN4 slice (``an4_slice_tri1``).

Export writes into its own workspace (symlinks to the shared slice's fbank, lang and
tri1_ali), since the session's slice workspace is read-only.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from lhotse import AudioSource, CutSet, MonoCut, Recording, validate
from lhotse.supervision import AlignmentItem

from weakalign.align.export import CutAlignment, export_stage, resolve_ali_dir, write_ctms
from weakalign.align.formats import read_ctm, read_textgrid
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model, read_tree, write_ali_archive
from weakalign.kaldi_steps.lang import Lang
from weakalign.kaldi_steps.train_deltas import read_utt2split
from weakalign.pipeline.io import read_json
from weakalign.pipeline.stage import run_stage
from weakalign.pipeline.workspace import Workspace
from tests.fixtures_align import linked_workspace


@pytest.fixture(scope="module")
def exported(an4_slice_tri1, tmp_path_factory) -> Workspace:
    ws = linked_workspace(an4_slice_tri1, tmp_path_factory.mktemp("export"))
    run_stage("export", ws, export_stage)
    return ws


def khg_transition_model(ws: Workspace):
    """khg's own TransitionModel from the alignment dir's tree and the lang's topology."""
    tm = khg.TransitionModel(read_tree(ws.exp / "tri1_ali" / "tree"), Lang.load(ws.lang).topo())
    assert tm.num_transition_ids == read_model(ws.exp / "tri1_ali" / "final.mdl")[0].num_transition_ids
    return tm


def test_default_dir_falls_back_to_tri1_ali_with_a_warning(exported, caplog):
    assert resolve_ali_dir(exported) == exported.exp / "tri1_ali"
    assert "hybrid_ali not found; using the alignments of" in caplog.text
    assert read_json(exported.done_dir / "export.json")["summary"]["ali_dir"] == str(exported.exp / "tri1_ali")
    with pytest.raises(FileNotFoundError, match="no final.mdl"):
        resolve_ali_dir(exported, exported.exp / "nonexistent")


def test_every_senone_is_the_pdf_of_the_aligned_transition_id(exported):
    tm = khg_transition_model(exported)
    tid2pdf = np.array(tm.transition_id_to_pdf_array())
    alignments = read_ali_dir(exported.exp / "tri1_ali")
    names = {int(i): n for n, i in (line.split() for line in open(exported.data / "ali" / "phones.txt"))}
    lang = Lang.load(exported.lang)
    checked = 0
    for split in ("train", "dev"):
        cuts = CutSet.from_file(exported.ali_cuts(split))
        fbank_ids = [c.id for c in CutSet.from_file(exported.fbank_cuts(split))]
        assert [c.id for c in cuts] == fbank_ids  # every slice utterance aligned, same order
        for cut in cuts:
            ali = alignments[cut.id]
            senone, phone = cut.load_senone(), cut.load_phone()
            assert len(ali) == cut.num_frames == len(senone) == len(phone)
            for t, tid in enumerate(ali):
                assert senone[t] == tm.transition_id_to_pdf(int(tid)), (cut.id, t)
            assert np.array_equal(senone, tid2pdf[ali])
            kaldi_phones = [lang.phone_names[tm.transition_id_to_phone(int(tid))] for tid in ali]
            assert [names[p] for p in phone] == [p.rsplit("_", 1)[0] if p[-2:] in ("_B", "_I", "_E", "_S")
                                                else p for p in kaldi_phones]
            assert 0 <= senone.min() and senone.max() < cut.custom["num_senones"] == tm.num_pdfs
            checked += len(ali)
    assert checked > 10000


def test_integer_storage_is_exact_and_lossless(exported):
    cut = next(iter(CutSet.from_file(exported.ali_cuts("train"))))
    senone = cut.load_senone()
    assert senone.dtype == np.int32 and cut.custom["senone"].array.storage_type == "numpy_files"
    stored = np.load(os.path.join(cut.custom["senone"].array.storage_path, cut.custom["senone"].array.storage_key))
    assert stored.dtype == np.int32 and np.array_equal(stored, senone)
    # large ids (speechocean762-sized inventories and beyond) come back exactly too
    from lhotse import NumpyFilesWriter
    ids = np.arange(0, 70000, 7, dtype=np.int32)
    with NumpyFilesWriter(exported.data / "probe") as w:
        back = w.store_array("x", ids, frame_shift=0.01, temporal_dim=0).load()
    assert back.dtype == np.int32 and np.array_equal(back, ids)


def test_exported_cutsets_validate_and_load_like_the_fbank_cuts(exported):
    for split in ("train", "dev"):
        cuts = CutSet.from_file(exported.ali_cuts(split)).to_eager()
        # lhotse 1.33's validate(read_data=True) compares a list shape to a tuple for every
        # TemporalArray; the data reads are checked here instead.
        validate(cuts, read_data=False)
        fbank = CutSet.from_file(exported.fbank_cuts(split)).to_eager()
        for cut in list(cuts)[:5]:
            assert np.array_equal(cut.load_features(), fbank[cut.id].load_features())
            assert cut.custom["senone"].load().shape == tuple(cut.custom["senone"].shape)
        cut = cuts[0]
        part = cut.truncate(offset=0.5, duration=0.6)
        assert np.array_equal(part.load_senone(), cut.load_senone()[50:110])


def test_alignment_items_cover_the_cut_and_match_the_transcript(exported):
    for cut in CutSet.from_file(exported.ali_cuts("train")):
        sup = cut.supervisions[0]
        phones, words = sup.alignment["phone"], sup.alignment["word"]
        assert phones[0].start == 0 and phones[-1].end == pytest.approx(min(cut.num_frames * 0.01, sup.end))
        for a, b in zip(phones, phones[1:]):
            assert a.end == pytest.approx(b.start) and a.duration > 0  # contiguous, in order
        assert [w.symbol for w in words] == sup.text.split()
        for a, b in zip(words, words[1:]):
            assert a.end <= b.start + 1e-9
        starts = {round(p.start, 6) for p in phones}
        assert all(round(w.start, 6) in starts for w in words)  # words start on phone boundaries
        # the phone strip says the same as the senone arrays' phone ids
        per_frame = np.repeat([p.symbol for p in phones], [round(p.duration * 100) for p in phones])
        names = dict(reversed(line.split()) for line in open(exported.data / "ali" / "phones.txt"))
        assert [names[str(i)] for i in cut.load_phone()[:len(per_frame)]] == per_frame.tolist()


def test_ctm_and_textgrids_agree_with_the_manifest(exported):
    cuts = CutSet.from_file(exported.ali_cuts("dev"))
    words = read_ctm(exported.data / "ali" / "ctm" / "dev.word.ctm")
    phones = read_ctm(exported.data / "ali" / "ctm" / "dev.phone.ctm")
    assert set(words) == set(phones) == set(cuts.ids)
    for kind in ("word", "phone"):  # sorted by utterance id, then start time, as sclite wants
        rows = [line.split() for line in (exported.data / "ali" / "ctm" / f"dev.{kind}.ctm").read_text().splitlines()]
        assert rows == sorted(rows, key=lambda r: (r[0], float(r[2])))
    assert list(cuts.ids) != sorted(cuts.ids)  # so the sorting above is the CTM writer's doing
    for cut in cuts:
        sup = cut.supervisions[0]
        assert [(w.symbol, w.start) for w in words[cut.id]] == [(w.symbol, round(w.start, 2))
                                                                   for w in sup.alignment["word"]]
        # MFA's layout: <speaker>/<recording>.TextGrid, tiers "words" and "phones"
        tiers = read_textgrid(exported.data / "ali" / "textgrid" / "dev" / sup.speaker / f"{cut.recording_id}.TextGrid")
        assert list(tiers) == ["words", "phones"]
        assert [t for t in (x[2] for x in tiers["words"]) if t] == sup.text.split()
        assert [t for _, _, t in tiers["phones"] if t] == [p.symbol for p in sup.alignment["phone"]]
        for intervals in tiers.values():
            assert intervals[-1][1] == pytest.approx(cut.recording.duration)
            assert all(a < b for a, b, _ in intervals)
            assert all(b == pytest.approx(c) for (_, b, _), (c, _, _) in zip(intervals, intervals[1:]))
    assert sum(1 for _ in (exported.data / "ali" / "textgrid" / "dev").rglob("*.TextGrid")) == len(cuts)


def assert_praatio_reads_as_we_wrote(path):
    """praatio (the TextGrid library MFA users script with) opens ``path`` with tiers ``words`` and
    ``phones`` holding exactly the intervals our reader sees."""
    from praatio import textgrid as praatio_textgrid

    grid = praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    ours = read_textgrid(path)
    assert list(grid.tierNames) == ["words", "phones"]
    for name, intervals in ours.items():
        theirs = [(e.start, e.end, e.label) for e in grid.getTier(name).entries]
        assert [t for _, _, t in theirs] == [t for _, _, t in intervals], name
        assert [x for a, b, _ in theirs for x in (a, b)] == pytest.approx([x for a, b, _ in intervals for x in (a, b)])


def test_praatio_opens_the_long_textgrids(exported):
    grids = sorted((exported.data / "ali" / "textgrid" / "dev").rglob("*.TextGrid"))
    assert grids
    for path in grids:
        assert_praatio_reads_as_we_wrote(path)


def test_the_test_split_is_exported_with_cuts_ctms_and_textgrids(exported):
    """Issue #18: tri1 force-aligns test with its transcripts, so export writes test's cuts, CTMs
    and MFA TextGrids like train's and dev's (an utterance tri1 could not align is skipped, named)."""
    alignments = read_ali_dir(exported.exp / "tri1_ali")
    split_of = read_utt2split(exported.exp / "tri1_ali")
    fbank = CutSet.from_file(exported.fbank_cuts("test")).to_eager()
    aligned = [u for u in fbank.ids if u in alignments]
    assert {u for u, s in split_of.items() if s == "test"} == set(aligned) and len(aligned) >= len(fbank) - 1
    cuts = CutSet.from_file(exported.ali_cuts("test")).to_eager()
    assert list(cuts.ids) == aligned
    for cut in cuts:
        frames = fbank[cut.id].load_features().shape[0]
        assert cut.num_frames == frames == len(cut.load_senone()) == len(cut.load_phone()) == len(alignments[cut.id])
        assert 0 <= cut.load_senone().min() and cut.load_senone().max() < cut.custom["num_senones"]
    ctm = exported.data / "ali" / "ctm"
    words, phones = read_ctm(ctm / "test.word.ctm"), read_ctm(ctm / "test.phone.ctm")
    assert set(words) == set(phones) == set(aligned)
    for cut in cuts:
        sup = cut.supervisions[0]
        assert [w.symbol for w in words[cut.id]] == sup.text.split()
        grid = exported.data / "ali" / "textgrid" / "test" / sup.speaker / f"{cut.recording_id}.TextGrid"
        tiers = read_textgrid(grid)
        assert list(tiers) == ["words", "phones"]
        assert [t for _, _, t in tiers["words"] if t] == sup.text.split()
        assert_praatio_reads_as_we_wrote(grid)
    assert sum(1 for _ in (exported.data / "ali" / "textgrid" / "test").rglob("*.TextGrid")) == len(cuts)
    summary = read_json(exported.done_dir / "export.json")["summary"]
    assert summary["splits"]["test"]["exported"] == len(aligned)
    assert summary["splits"]["test"]["no_alignment"] == len(fbank) - len(aligned)


def test_e2e_training_inputs_hold_no_test_utterance(exported):
    """The E2E trainer reads train and dev (:func:`weakalign.e2e.data.load_cuts`); exporting test
    beside them must not put a single test utterance into either."""
    from weakalign.e2e.data import load_cuts, training_cuts_source

    test_ids = set(CutSet.from_file(exported.ali_cuts("test")).ids)
    assert test_ids and training_cuts_source(exported) == "ali"
    for split in ("train", "dev"):
        ids = set(load_cuts(exported, split, "ali").ids)
        assert ids == set(CutSet.from_file(exported.fbank_cuts(split)).ids) and ids.isdisjoint(test_ids)


@pytest.fixture(scope="module")
def damaged(exported, tmp_path_factory):
    """An alignment dir laid out as real Kaldi may leave it (``final.mdl`` + ``ali.1.gz``, no
    ``num_jobs``, no ``phones.txt``: the lang's is used), holding tri1_ali's alignments of train and
    dev only (as a Kaldi recipe that aligned no test), except that one utterance is missing and four
    are 3, 2, -1, -2 frames off; exported through the CLI."""
    root = tmp_path_factory.mktemp("damaged")
    src = exported.exp / "tri1_ali"
    ali_dir = root / "ali"
    ali_dir.mkdir()
    for name in ("final.mdl", "tree"):
        shutil.copy(src / name, ali_dir / name)
    alis = read_ali_dir(src)
    train = CutSet.from_file(exported.fbank_cuts("train")).ids
    test = set(CutSet.from_file(exported.fbank_cuts("test")).ids)
    missing, too_long, plus2, minus1, minus2 = list(train)[:5]
    changed = {too_long: np.concatenate([alis[too_long], alis[too_long][-1:].repeat(3)]),
               plus2: np.concatenate([alis[plus2], alis[plus2][-1:].repeat(2)]),
               minus1: alis[minus1][:-1], minus2: alis[minus2][:-2]}
    write_ali_archive(ali_dir / "ali.1.gz",
                      [(u, changed.get(u, a)) for u, a in alis.items() if u != missing and u not in test])
    ws = linked_workspace(exported, root / "ws", ali_dirs=())
    from weakalign.pipeline.cli import cli

    result = CliRunner().invoke(cli, ["export", "an4", "--data-root", str(ws.data_root), "--exp-root",
                                      str(ws.exp_root), "--ali-dir", str(ali_dir), "--no-textgrid"])
    assert result.exit_code == 0, result.output
    return ws, dict(missing=missing, too_long=too_long, plus2=plus2, minus1=minus1, minus2=minus2), alis, result


def test_missing_and_mismatched_utterances_are_listed_and_counted(damaged):
    ws, utt, _, result = damaged
    summary = read_json(ws.done_dir / "export.json")["summary"]
    assert summary["skipped"] == 2
    skipped = dict(summary["items"])
    assert skipped[utt["missing"]].startswith("no alignment")
    assert "alignment has" in skipped[utt["too_long"]] and "difference +3 exceeds 2" in skipped[utt["too_long"]]
    counts = summary["splits"]["train"]
    assert (counts["no_alignment"], counts["frame_mismatch"], counts["padded"], counts["trimmed"]) == (1, 1, 2, 1)
    assert counts["exported"] == counts["cuts"] - 2
    ids = set(CutSet.from_file(ws.ali_cuts("train")).ids)
    assert utt["missing"] not in ids and utt["too_long"] not in ids
    assert "train: 58/60 cuts exported (1 without alignment, 1 frame mismatches)" in result.output


def test_small_frame_differences_are_padded_or_trimmed_at_the_end(damaged, exported):
    ws, utt, _, _ = damaged
    cuts = CutSet.from_file(ws.ali_cuts("train")).to_eager()
    intact = CutSet.from_file(exported.ali_cuts("train")).to_eager()
    trimmed = cuts[utt["plus2"]]
    assert np.array_equal(trimmed.load_senone(), intact[utt["plus2"]].load_senone())
    for key, n in (("minus1", 1), ("minus2", 2)):
        cut, truth = cuts[utt[key]], intact[utt[key]].load_senone()
        senone = cut.load_senone()
        assert len(senone) == cut.num_frames
        assert np.array_equal(senone[:-n], truth[:-n])
        assert (senone[-n:] == truth[-n - 1]).all()  # the shortened alignment's last label, repeated
        assert cut.supervisions[0].alignment["phone"][-1].end == pytest.approx(
            min(cut.num_frames * 0.01, cut.supervisions[0].end))


def test_export_is_redone_when_hybrid_alignments_appear(an4_slice_tri1, tmp_path, caplog):
    ws = linked_workspace(an4_slice_tri1, tmp_path)
    assert run_stage("export", ws, export_stage, textgrids=False)["ali_dir"] == str(ws.exp / "tri1_ali")
    run_stage("export", ws, export_stage, textgrids=False)
    assert "export: already done" in caplog.text
    os.symlink(an4_slice_tri1.exp / "tri1_ali", ws.exp / "hybrid_ali")  # a hybrid_ali in the same format
    caplog.clear()
    summary = run_stage("export", ws, export_stage, textgrids=False)
    assert f"alignments: {ws.exp / 'tri1_ali'} sha256:" in caplog.text
    assert f"-> {ws.exp / 'hybrid_ali'} sha256:" in caplog.text and "already done" not in caplog.text
    assert summary["ali_dir"] == str(ws.exp / "hybrid_ali")
    assert sum(1 for _ in CutSet.from_file(ws.ali_cuts("dev"))) == summary["splits"]["dev"]["exported"] > 0


def test_a_split_without_alignments_is_named_not_exported(exported, damaged):
    """tri1_ali holds every split, so ours exports them all; a Kaldi dir without test names it."""
    summary = read_json(exported.done_dir / "export.json")["summary"]
    assert summary["splits_without_alignments"] == {} and list(summary["splits"]) == ["train", "dev", "test"]
    assert summary["alignments_outside_splits"] == 0
    ws, _, _, result = damaged
    done = read_json(ws.done_dir / "export.json")["summary"]
    assert done["splits_without_alignments"] == {"test": 12} and not ws.ali_cuts("test").exists()
    assert "test: not exported: none of its 12 utterances has an alignment in" in result.output


def test_every_split_with_alignments_is_exported_in_short_textgrids(an4_slice_tri1, tmp_path):
    """A ``test`` split made of dev's utterances (so tri1_ali aligns it) is exported like any other,
    through the CLI with ``--textgrid-format short``."""
    ws = Workspace("an4", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    src = an4_slice_tri1
    for kind, of in (("manifests", src.manifest), ("fbank", lambda *kind_split: src.fbank_cuts(kind_split[-1]))):
        for split in ("train", "dev"):
            for path in {of("recordings", split), of("supervisions", split)}:
                test_path = ws.data / kind / path.name.replace(f"_{split}.", "_test.")
                test_path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path, ws.data / kind / path.name)
                if split == "dev":
                    os.symlink(path, test_path)
    os.symlink(src.lang, ws.lang)
    ws.exp.mkdir(parents=True)
    os.symlink(src.exp / "tri1_ali", ws.exp / "tri1_ali")
    assert ws.available_splits() == ["train", "dev", "test"]
    from weakalign.pipeline.cli import cli

    result = CliRunner().invoke(cli, ["export", "an4", "--data-root", str(ws.data_root), "--exp-root",
                                      str(ws.exp_root), "--textgrid-format", "short"])
    assert result.exit_code == 0, result.output
    assert "test: 12/12 cuts exported" in result.output
    test_cuts = CutSet.from_file(ws.ali_cuts("test"))
    assert sorted(test_cuts.ids) == sorted(CutSet.from_file(src.fbank_cuts("dev")).ids)
    grids = sorted((ws.data / "ali" / "textgrid" / "test").rglob("*.TextGrid"))
    assert len(grids) == 12 and (ws.data / "ali" / "ctm" / "test.phone.ctm").exists()
    text = grids[0].read_text()
    assert "item [" not in text and text.splitlines()[3:6] == ["0", text.splitlines()[4], "<exists>"]  # short
    assert list(read_textgrid(grids[0])) == ["words", "phones"]
    for path in grids:
        assert_praatio_reads_as_we_wrote(path)


def test_exported_cuts_load_from_any_working_directory(an4_slice_tri1, exported, tmp_path, monkeypatch):
    """Exported as the CLI does by default (``--data-root data``: a relative workspace), then loaded
    from another directory: every path in the cuts is absolute."""
    monkeypatch.chdir(tmp_path)
    ws = linked_workspace(an4_slice_tri1, Path("project"))
    run_stage("export", ws, export_stage, splits=["dev"], textgrids=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cuts = CutSet.from_file(tmp_path / "project" / "data" / "an4" / "cuts_dev_ali.jsonl.gz").to_eager()
    reference = CutSet.from_file(exported.ali_cuts("dev")).to_eager()
    assert len(cuts) == len(reference) == 12
    for cut in cuts:
        paths = [cut.custom["senone"].array.storage_path, cut.custom["phone"].array.storage_path,
                 cut.features.storage_path, *(s.source for s in cut.recording.sources)]
        assert all(os.path.isabs(p) for p in paths), paths
        assert np.array_equal(cut.load_senone(), reference[cut.id].load_senone())
        assert np.array_equal(cut.load_phone(), reference[cut.id].load_phone())
        assert cut.load_features().shape == (cut.num_frames, 80)


def test_relative_export_moves_with_its_tree_and_is_rebased(an4_slice_tri1, exported, tmp_path, monkeypatch,
                                                           caplog):
    from weakalign.align.paths import rebase_cuts

    ws = linked_workspace(an4_slice_tri1, tmp_path / "project")
    run_stage("export", ws, export_stage, relative_to=str(ws.data_root), textgrids=False)
    run_stage("export", ws, export_stage, relative_to=str(ws.data_root), textgrids=False)
    assert "export: already done" in caplog.text   # the path style is part of the request
    raw = CutSet.from_file(ws.ali_cuts("dev")).to_eager()
    cut = raw[0]
    assert cut.custom["senone"].array.storage_path == os.path.join("an4", "ali", "arrays", "dev")
    assert not any(os.path.isabs(p) for p in (cut.features.storage_path, cut.recording.sources[0].source))
    # The whole tree moves (audio and fbank at the same relative place); the cuts follow it.
    (tmp_path / "project").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    moved = CutSet.from_file(tmp_path / "moved" / "data" / "an4" / "cuts_dev_ali.jsonl.gz")
    with pytest.raises(FileNotFoundError):
        moved[0].load_senone()
    cuts = rebase_cuts(moved, tmp_path / "moved" / "data").to_eager()
    reference = CutSet.from_file(exported.ali_cuts("dev")).to_eager()
    for cut in cuts:
        ref = reference[cut.id]
        assert np.array_equal(cut.load_senone(), ref.load_senone())
        assert np.array_equal(cut.load_phone(), ref.load_phone())
        assert np.array_equal(cut.load_features(), ref.load_features())
    assert np.array_equal(cuts[0].load_audio(), reference[cuts[0].id].load_audio())


def test_textgrids_follow_mfa_per_recording_with_a_tier_pair_per_speaker():
    """Segmented recordings (one TextGrid per recording, times in the recording): one speaker gives
    ``<speaker>/<rec>.TextGrid`` with ``words``/``phones``; two give ``<spk> - words`` ... at the top."""
    from lhotse import SupervisionSegment
    from lhotse.supervision import AlignmentItem
    from lhotse.testing.dummies import dummy_cut

    from weakalign.align.export import CutAlignment, textgrid_files

    def segment(cut_id, recording, start, speaker, word):
        cut = dummy_cut(cut_id, start=start, duration=1.0, recording_duration=5.0, recording=recording)
        sup = SupervisionSegment(f"s{cut_id}", cut.recording_id, start=0.0, duration=1.0, speaker=speaker)
        items = [AlignmentItem(word, 0.25, 0.5)]
        return dataclasses.replace(cut, supervisions=[sup]), CutAlignment(None, None, items, items, None, 0)

    talk = dummy_cut(0, recording_duration=5.0).recording
    dialogue = dataclasses.replace(talk, id="dialogue")
    aligned = [segment(1, talk, 3.0, "ann", "LATER"), segment(2, talk, 1.0, "ann", "EARLY"),
               segment(3, dialogue, 0.0, "bob", "HI"), segment(4, dialogue, 2.0, "cid", "YO")]
    files = textgrid_files(aligned)
    assert set(files) == {os.path.join("ann", f"{talk.id}.TextGrid"), "dialogue.TextGrid"}
    tiers, xmax = files[os.path.join("ann", f"{talk.id}.TextGrid")]
    assert xmax == 5.0 and list(tiers) == ["words", "phones"]
    assert [(w.symbol, w.start) for w in tiers["words"]] == [("EARLY", 1.25), ("LATER", 3.25)]
    tiers, _ = files["dialogue.TextGrid"]
    assert list(tiers) == ["bob - words", "bob - phones", "cid - words", "cid - phones"]
    assert [(w.symbol, w.start) for w in tiers["cid - words"]] == [("YO", 2.25)]


def test_segments_of_longer_recordings_also_get_recording_level_ctms(tmp_path):
    """Two utterances of one recording: the ``.rec.ctm`` lists both under the recording id, in
    recording time and order; whole-recording utterances get none (an earlier one is removed)."""
    rec = Recording("rec1", [AudioSource("file", [0], "/c/rec1.wav")], 16000, 16000 * 10, 10.0)
    phones = [AlignmentItem("SIL", 0.0, 0.2), AlignmentItem("AH", 0.2, 0.3)]
    words = [AlignmentItem("A", 0.2, 0.3)]
    aligned = [(MonoCut("u2", 6.0, 1.0, 0, recording=rec), CutAlignment(None, None, phones, words, None, 0)),
               (MonoCut("u1", 1.5, 1.0, 0, recording=rec), CutAlignment(None, None, phones, None, "no words", 0))]
    write_ctms(tmp_path, "dev", aligned)
    assert (tmp_path / "dev.phone.rec.ctm").read_text() == ("rec1 1 1.50 0.20 SIL\nrec1 1 1.70 0.30 AH\n"
                                                            "rec1 1 6.00 0.20 SIL\nrec1 1 6.20 0.30 AH\n")
    assert (tmp_path / "dev.word.rec.ctm").read_text() == "rec1 1 6.20 0.30 A\n"
    assert (tmp_path / "dev.word.ctm").read_text() == "u2 1 0.20 0.30 A\n"
    whole = [(MonoCut("u3", 0.0, 10.0, 0, recording=rec), CutAlignment(None, None, phones, words, None, 0))]
    write_ctms(tmp_path, "dev", whole)
    assert not (tmp_path / "dev.phone.rec.ctm").exists() and (tmp_path / "dev.phone.ctm").exists()
