"""Bad input on a small real data dir (issue #19, items 2-4): each fault gets one clear, counted answer.

A Kaldi data dir of 24 real AN4 utterances (6 speakers x 4) is built twice: clean, and with one
fault per utterance (:data:`FAULTS`). The faulty one goes through ``prepare``, ``features``,
``lang``, ``mono`` and ``tri1`` (tiny settings, ~10 s in all); the clean one through ``prepare``
and ``features``, to show that the other utterances come out the same. Every test asserts the
exact behaviour: which stage drops which utterance under which cause, the counts, the messages.
"""

import shutil

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from lhotse import CutSet, RecordingSet, SupervisionSet

from weakalign.kaldi_steps.lang import lang_stage
from weakalign.kaldi_steps.train_deltas import tri1_stage
from weakalign.kaldi_steps.train_mono import mono_stage
from weakalign.pipeline.corpora import prepare
from weakalign.pipeline.features import compute_features
from weakalign.pipeline.io import read_json
from weakalign.pipeline.recipe import ALIGN_STAGES
from weakalign.pipeline.report import skip_rows
from weakalign.pipeline.stage import marker_path, run_stage
from weakalign.pipeline.workspace import Workspace

SPEAKERS = ("fash", "fbbh", "fclc", "fejs", "ffmm", "fjam")
#: utterance -> its fault (the utterances not named here are clean)
FAULTS = {
    "an251-fash-b": "never aligns",          # 1 s of audio, a 40-word transcript
    "an253-fash-b": "missing audio",
    "an254-fash-b": "duplicate text line",   # a second line says NO; the first (YES) is used
    "an87-fbbh-b": "zero-byte audio",
    "an88-fbbh-b": "8 kHz",
    "an146-fclc-b": "duplicate wav.scp line",
    "an147-fclc-b": "truncated flac",
    "an148-fclc-b": "stereo",
    "an149-fclc-b": "garbage audio",
    "an37-fejs-b": "empty transcript",
    "an38-fejs-b": "digital silence",
    "an292-ffmm-b": "oov",
    "an293-ffmm-b": "segment past the end",
    "an77-fjam-b": "not in utt2spk",
    "an78-fjam-b": "not UTF-8",
}
#: Kept with audio and transcript intact: their supervisions and features must equal the clean run's.
INTACT = {"an254-fash-b", "an146-fclc-b", "an148-fclc-b", "an77-fjam-b"}
MONO = {"num_iters": 8, "total_gauss": 150, "max_iter_inc": 6, "decode": False}
TRI1 = {"num_iters": 4, "num_leaves": 60, "total_gauss": 150, "max_iter_inc": 3, "realign_iters": (2,),
        "thresh": 20.0, "decode": False}


def an4_utterances(an4):
    texts = {}
    for line in (an4 / "etc" / "an4_train.transcription").read_text().splitlines():
        words, _, utt = line.rpartition("(")
        texts[utt.strip(") ")] = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
    return [(f.stem, spk, f, texts[f.stem]) for spk in SPEAKERS
            for f in sorted((an4 / "wav" / "an4_clstk" / spk).glob("*.flac"))[:4]]


def write_data_dir(root, an4, faulty: bool):
    """``root/train`` (wav.scp, segments, text, utt2spk) and ``root/audio``; with ``faulty``, FAULTS injected."""
    src, audio = root / "train", root / "audio"
    src.mkdir(parents=True)
    audio.mkdir()
    wav, segments, text, utt2spk = {}, {}, {}, {}
    extra_wav, extra_text = [], []
    for utt, spk, flac, words in an4_utterances(an4):
        wav[utt], segments[utt], text[utt], utt2spk[utt] = str(flac), "0 -1", words, spk
        fault = FAULTS.get(utt) if faulty else None
        if fault is None:
            continue
        samples, _ = sf.read(flac, dtype="int16")
        if fault == "never aligns":
            text[utt] = " ".join(["SEVENTY SEVEN"] * 20)
        elif fault == "missing audio":
            wav[utt] = str(audio / "nope.flac")
        elif fault == "duplicate text line":
            extra_text.append(f"{utt} NO")
        elif fault == "zero-byte audio":
            (audio / "zero.flac").write_bytes(b"")
            wav[utt] = str(audio / "zero.flac")
        elif fault == "8 kHz":
            sf.write(audio / "eight_k.wav", samples[::2], 8000)
            wav[utt] = str(audio / "eight_k.wav")
        elif fault == "duplicate wav.scp line":
            extra_wav.append(f"{utt} {audio / 'eight_k.wav'}")
        elif fault == "truncated flac":
            (audio / "truncated.flac").write_bytes(flac.read_bytes()[:4000])
            wav[utt] = str(audio / "truncated.flac")
        elif fault == "stereo":
            sf.write(audio / "stereo.wav", np.stack([samples, samples // 2], axis=1), 16000)
            wav[utt] = str(audio / "stereo.wav")
        elif fault == "garbage audio":
            (audio / "garbage.wav").write_bytes(b"RIFF0000WAVEnot really audio" * 10)
            wav[utt] = str(audio / "garbage.wav")
        elif fault == "empty transcript":
            text[utt] = ""
        elif fault == "digital silence":
            sf.write(audio / "silence.wav", np.zeros(16000, dtype=np.int16), 16000)
            wav[utt] = str(audio / "silence.wav")
        elif fault == "oov":
            text[utt] = "ENTER ZZYZX EIGHT"
        elif fault == "segment past the end":
            segments[utt] = f"0 {len(samples) / 16000 + 1:.2f}"
        elif fault == "not in utt2spk":
            del utt2spk[utt]
    (src / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in wav.items()) + "".join(f"{x}\n" for x in extra_wav))
    (src / "segments").write_text("".join(f"{u} {u} {span}\n" for u, span in segments.items()))
    (src / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk.items()))
    lines = [f"{u} {t}".strip() + "\n" for u, t in text.items()] + [f"{x}\n" for x in extra_text]
    data = "".join(lines).encode()
    if faulty:  # one Latin-1 byte in an otherwise UTF-8 file
        data = data.replace(b"an78-fjam-b R Q Z", b"an78-fjam-b R\xe9 Q Z")
    (src / "text").write_bytes(data)
    return src


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpora_dir):
    """``{"clean": ws, "faulty": ws}``: prepare + features on both; lang, mono, tri1 on the faulty one."""
    an4 = corpora_dir / "an4"
    out = {}
    for name in ("clean", "faulty"):
        root = tmp_path_factory.mktemp(f"bad_input_{name}")
        src = write_data_dir(root / "corpus", an4, faulty=name == "faulty")
        ws = Workspace("bad", data_root=root / "data", exp_root=root / "exp")
        run_stage("prepare", ws, prepare, src=src, recipe="kaldi")
        run_stage("features", ws, compute_features, nj=1)
        out[name] = ws
    ws = out["faulty"]
    run_stage("lang", ws, lang_stage, lexicon=an4 / "etc" / "an4.dic", lm=an4 / "etc" / "an4.ug.lm")
    run_stage("mono", ws, mono_stage, nj=1, **MONO)
    run_stage("tri1", ws, tri1_stage, nj=1, **TRI1)
    return out


def summary(ws, stage):
    return read_json(marker_path(ws, stage))["summary"]


def stage_log(ws, stage):
    return (ws.log_dir / f"{stage}.log").read_text()


def supervisions(ws):
    return {s.id: s for split in ws.available_splits() for s in SupervisionSet.from_file(ws.manifest("supervisions", split))}


def recordings(ws):
    return {r.id: r for split in ws.available_splits() for r in RecordingSet.from_file(ws.manifest("recordings", split))}


def cuts(ws, kind="mfcc"):
    path = ws.mfcc_cuts if kind == "mfcc" else ws.fbank_cuts
    return {c.id: c for split in ws.available_splits() for c in CutSet.from_file(path(split))}


def test_prepare_skips_each_bad_utterance_once_under_its_cause(runs):
    s = summary(runs["faulty"], "prepare")
    items = dict(s["items"])
    assert sorted(items) == sorted(["an253-fash-b", "an87-fbbh-b", "an147-fclc-b", "an149-fclc-b", "an37-fejs-b",
                                    "an293-ffmm-b", "an78-fjam-b"])
    assert s["skipped"] == 7 == len(s["items"])
    assert s["reasons"] == {"missing audio": 1, "unreadable audio": 3, "empty transcript": 1, "not UTF-8": 1,
                            "audio shorter than its segment": 1}
    assert items["an253-fash-b"].startswith("missing audio: no file ") and items["an253-fash-b"].endswith("nope.flac")
    assert "zero.flac" in items["an87-fbbh-b"] and "Format not recognised" in items["an87-fbbh-b"]
    assert "garbage.wav" in items["an149-fclc-b"]
    assert items["an37-fejs-b"] == "empty transcript"
    assert items["an293-ffmm-b"].startswith("audio shorter than its segment: segment ends at ")
    log = stage_log(runs["faulty"], "prepare")
    for utt, reason in items.items():
        assert f"prepare: skipping {utt}: {reason}" in log
    assert "prepare: skipped 7 item(s)" in log and "2 input line(s) ignored" in log


def test_truncated_flac_is_caught_by_prepare_not_later(runs):
    reason = dict(summary(runs["faulty"], "prepare")["items"])["an147-fclc-b"]
    assert reason.startswith("unreadable audio: ") and "truncated.flac: truncated or damaged" in reason
    assert summary(runs["faulty"], "features")["skipped"] == 1   # only the digital silence


def test_non_utf8_text_line_costs_its_utterance_and_names_file_line_and_byte(runs):
    reason = dict(summary(runs["faulty"], "prepare")["items"])["an78-fjam-b"]
    lines = (runs["faulty"].data.parent.parent / "corpus" / "train" / "text").read_bytes().splitlines()
    number = next(n for n, line in enumerate(lines, 1) if line.startswith(b"an78-fjam-b "))
    assert reason == (f"not UTF-8: train/text line {number}, byte 0xe9 at column 14 "
                      "(convert the file to UTF-8, e.g. with iconv)")
    assert "an78-fjam-b" not in supervisions(runs["faulty"])
    # The lines after it are read as usual.
    assert supervisions(runs["faulty"])["an79-fjam-b"].text == "RUBOUT J U I P THREE TWO EIGHT"


def test_duplicate_lines_are_ignored_not_counted_and_the_first_is_used(runs):
    s = summary(runs["faulty"], "prepare")
    ignored = dict(s["ignored_lines"])
    assert len(ignored) == 2
    (text_line, text_msg), = [(w, m) for w, m in ignored.items() if w.startswith("train/text line ")]
    (wav_line, wav_msg), = [(w, m) for w, m in ignored.items() if w.startswith("train/wav.scp line ")]
    assert text_msg == "duplicate id: an254-fash-b is on line 3 too (that line is used)"
    assert wav_msg == "duplicate id: an146-fclc-b is on line 9 too (that line is used)"
    assert text_line == "train/text line 25" and wav_line == "train/wav.scp line 25"
    sups = supervisions(runs["faulty"])
    assert sups["an254-fash-b"].text == "YES"
    assert recordings(runs["faulty"])["an146-fclc-b"].sources[0].source.endswith("an146-fclc-b.flac")
    log = stage_log(runs["faulty"], "prepare")
    assert "skipping an254-fash-b" not in log and "skipping an146-fclc-b" not in log
    assert f"prepare: ignoring {text_line}: {text_msg}" in log


def test_other_sample_rate_and_stereo_are_kept_and_said(runs):
    recs = recordings(runs["faulty"])
    assert recs["an88-fbbh-b"].sampling_rate == 16000 and recs["an88-fbbh-b"].transforms
    assert recs["an148-fclc-b"].num_channels == 2
    log = stage_log(runs["faulty"], "prepare")
    assert "prepare: an88-fbbh-b: sample rate 8000 Hz: resampled to 16000 Hz" in log
    assert "prepare: an148-fclc-b: 2 channels; only channel 0 is used" in log
    feats = cuts(runs["faulty"])
    assert {"an88-fbbh-b", "an148-fclc-b"} <= set(feats)


def test_utterance_missing_from_utt2spk_is_its_own_speaker_reported_and_leaves_dev_alone(runs):
    clean, faulty = runs["clean"], runs["faulty"]
    s = summary(faulty, "prepare")
    assert s["speaker_not_in_utt2spk"] == {"train": ["an77-fjam-b"]}
    assert supervisions(faulty)["an77-fjam-b"].speaker == "an77-fjam-b"
    dev = {name: {x.speaker for x in SupervisionSet.from_file(ws.manifest("supervisions", "dev"))}
           for name, ws in runs.items()}
    assert dev["faulty"] == dev["clean"] and len(dev["clean"]) == 1
    assert (f"prepare: 1 utterance(s) not in {faulty.data.parent.parent / 'corpus' / 'train' / 'utt2spk'}: "
            "each is its own speaker (its id) and stays out of dev: an77-fjam-b") in stage_log(faulty, "prepare")


def test_digital_silence_is_one_skip_of_the_features_stage(runs):
    s = summary(runs["faulty"], "features")
    assert s["items"] == [["an38-fejs-b", "digital silence: all 100 frames are identical (constant audio)"]]
    assert s["reasons"] == {"digital silence": 1}
    assert "an38-fejs-b" not in cuts(runs["faulty"]) and "an38-fejs-b" not in cuts(runs["faulty"], "fbank")
    assert set(cuts(runs["faulty"])) == set(cuts(runs["faulty"], "fbank"))


def test_the_other_utterances_come_out_as_from_the_clean_dir(runs):
    clean, faulty = (supervisions(runs[n]) for n in ("clean", "faulty"))
    untouched = set(clean) - set(FAULTS)
    assert len(untouched) == 9
    for utt in untouched | INTACT:
        a, b = clean[utt], faulty[utt]
        assert (a.text, a.start, a.duration) == (b.text, b.start, b.duration), utt
        assert a.speaker == b.speaker or utt == "an77-fjam-b"
    feats = {n: cuts(runs[n]) for n in ("clean", "faulty")}
    for utt in untouched | INTACT:
        assert np.array_equal(feats["clean"][utt].load_features(), feats["faulty"][utt].load_features()), utt
    # and nothing else is there: 24 utterances - 7 skipped by prepare - 1 by features
    assert len(feats["faulty"]) == 16


def test_oov_words_are_kept_mapped_and_counted(runs):
    s = summary(runs["faulty"], "lang")
    assert s["skipped"] == 0
    assert sum(split["top_oovs"].get("ZZYZX", 0) for split in s["oov"].values()) == 1
    assert "lang: an292-ffmm-b: 1 word(s) not in the lexicon: ZZYZX" in stage_log(runs["faulty"], "lang")
    assert "an292-ffmm-b" in cuts(runs["faulty"])


def test_an_utterance_that_never_aligns_is_one_skip_per_stage_and_one_line(runs):
    ws = runs["faulty"]
    assert "an251-fash-b" in supervisions(ws) and "an251-fash-b" not in {
        x.id for x in SupervisionSet.from_file(ws.manifest("supervisions", "dev"))}
    for stage in ("mono", "tri1"):
        s = summary(ws, stage)
        assert s["items"] == [["an251-fash-b", "alignment failed: not even with retry beam 40.0"]], stage
        assert s["skipped"] == 1 and s["reasons"] == {"alignment failed": 1}
        log = stage_log(ws, stage)
        lines = [line for line in log.splitlines() if "an251-fash-b" in line]
        assert len(lines) == (2 if stage == "mono" else 3), lines   # tri1 also says: no mono alignment
        assert f"{stage}: 1 utterance(s) failed intermediate alignment passes" in log
    mono_passes = summary(ws, "mono")
    diag = read_json(ws.exp / "mono" / "diagnostics.json")
    assert diag["intermediate_alignment_failures"] == {"an251-fash-b": 8}
    assert "an251-fash-b (8 of 8)" in stage_log(ws, "mono") and mono_passes["aligned"] == 12   # 13 train - 1


def test_skip_table_over_the_stages(runs):
    rows = skip_rows(runs["faulty"].done_dir, ALIGN_STAGES)
    assert {(stage, cause): sorted(ids) for stage, cause, ids in rows} == {
        ("prepare", "missing audio"): ["an253-fash-b"],
        ("prepare", "unreadable audio"): ["an147-fclc-b", "an149-fclc-b", "an87-fbbh-b"],
        ("prepare", "audio shorter than its segment"): ["an293-ffmm-b"],
        ("prepare", "empty transcript"): ["an37-fejs-b"],
        ("prepare", "not UTF-8"): ["an78-fjam-b"],
        ("prepare", "ignored line: duplicate id"): ["train/text line 25", "train/wav.scp line 25"],
        ("features", "digital silence"): ["an38-fejs-b"],
        ("mono", "alignment failed"): ["an251-fash-b"],
        ("tri1", "alignment failed"): ["an251-fash-b"],
    }
    order = [ALIGN_STAGES.index(stage) for stage, _, _ in rows]
    assert order == sorted(order)


def test_align_ends_with_the_skip_table(runs):
    from weakalign.pipeline.cli import cli

    ws = runs["faulty"]
    result = CliRunner().invoke(cli, ["align", "bad", "--data-root", str(ws.data_root), "--exp-root",
                                      str(ws.exp_root), "--stop-after", "tri1", "--nj", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = (ws.log_dir / "skipped.log").read_text()
    assert "features digital silence" in " ".join(table.split())
    assert "distinct items" in table and table.splitlines()[len(skip_rows(ws.done_dir, ALIGN_STAGES)) + 1].split()[-1] == "11"
    assert "mono\talignment failed\tan251-fash-b\n" in table


def an4_copy(root, an4, fault=None):
    """AN4's etc/ copied (transcriptions edited by ``fault(lines) -> lines``), its wav/ linked."""
    (root / "etc").mkdir(parents=True)
    for f in (an4 / "etc").iterdir():
        if f.is_file():
            shutil.copy(f, root / "etc" / f.name)
    (root / "wav").symlink_to(an4 / "wav")
    if fault:
        path = root / "etc" / "an4_train.transcription"
        path.write_bytes(b"".join(fault(path.read_bytes().splitlines(keepends=True))))
    return root


def test_an4_transcription_faults_cost_one_utterance_and_leave_dev_alone(tmp_path, corpora_dir):
    an4 = corpora_dir / "an4"
    slice_ = {"max_utts_per_split": "train=6,dev=4,test=1", "utts_per_speaker": 3, "recipe": "an4"}
    clean = Workspace("an4", data_root=tmp_path / "clean" / "data", exp_root=tmp_path / "clean" / "exp")
    run_stage("prepare", clean, prepare, src=an4_copy(tmp_path / "clean" / "an4", an4), **slice_)
    victim = next(iter(SupervisionSet.from_file(clean.manifest("supervisions", "train")))).id
    lines = (an4 / "etc" / "an4_train.transcription").read_bytes().splitlines(keepends=True)
    number = next(n for n, line in enumerate(lines, 1) if f"({victim})".encode() in line)

    def fault(lines):
        lines = list(lines)
        lines[number - 1] = lines[number - 1].replace(b"<s> ", b"<s> \xff", 1)   # not UTF-8
        return lines + [lines[0], b"a line without an id\n"]                      # a duplicate, a malformed line

    faulty = Workspace("an4", data_root=tmp_path / "faulty" / "data", exp_root=tmp_path / "faulty" / "exp")
    s = run_stage("prepare", faulty, prepare, src=an4_copy(tmp_path / "faulty" / "an4", an4, fault), **slice_)
    assert s["items"] == [[victim, f"not UTF-8: etc/an4_train.transcription line {number}, byte 0xff at column 5 "
                                   "(convert the file to UTF-8, e.g. with iconv)"]]
    first = lines[0].decode().rsplit("(", 1)[1].strip(")\n ")
    assert s["ignored_lines"] == [
        [f"etc/an4_train.transcription line {len(lines) + 1}", f"duplicate id: {first} is on line 1 too "
                                                               "(that line is used)"],
        [f"etc/an4_train.transcription line {len(lines) + 2}",
         "malformed transcription line (no utterance id): 'a line without an id'"]]
    ids = {ws: {split: [x.id for x in SupervisionSet.from_file(ws.manifest("supervisions", split))]
                for split in ("train", "dev", "test")} for ws in (clean, faulty)}
    assert ids[faulty]["dev"] == ids[clean]["dev"] and ids[faulty]["test"] == ids[clean]["test"]
    assert ids[faulty]["train"] == [u for u in ids[clean]["train"] if u != victim]


# Lhotse falls back to audioread for audio libsndfile cannot read; audioread imports deprecated modules.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread.rawread")
def test_audio_that_breaks_after_prepare_is_one_features_skip_under_its_cause(tmp_path, corpora_dir):
    """Damage ``prepare`` cannot see (the file changed since): one skip of ``features``, keyed by the
    cause, not one per feature type; the cut is in neither feature set."""
    utts = an4_utterances(corpora_dir / "an4")[4:7]
    src = tmp_path / "corpus" / "test"
    src.mkdir(parents=True)
    for utt, _, flac, _ in utts:
        shutil.copy(flac, tmp_path / "corpus" / flac.name)
    (src / "wav.scp").write_text("".join(f"{u} {tmp_path / 'corpus' / f.name}\n" for u, _, f, _ in utts))
    (src / "text").write_text("".join(f"{u} {t}\n" for u, _, _, t in utts))
    ws = Workspace("broken", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    run_stage("prepare", ws, prepare, src=src, recipe="kaldi")
    victim, _, flac, _ = utts[1]
    damaged = tmp_path / "corpus" / flac.name
    damaged.write_bytes(damaged.read_bytes()[:3000])
    s = run_stage("features", ws, compute_features, nj=1)
    assert s["items"] == [[victim, "unreadable audio: Error : flac decoder lost sync."]]
    assert s["skipped"] == 1 and s["reasons"] == {"unreadable audio": 1}
    assert set(cuts(ws)) == set(cuts(ws, "fbank")) == {utts[0][0], utts[2][0]}


def test_every_kaldi_table_file_names_its_non_utf8_line(tmp_path):
    from weakalign.pipeline.corpora.kaldi_dir import read_kaldi_data_dir
    from weakalign.pipeline.report import SkipReport

    d = tmp_path / "train"
    d.mkdir()
    bad = "\xe9".encode("latin-1")
    (d / "wav.scp").write_bytes(b"r1 a.wav\nr2 b" + bad + b".wav\nr3 c.wav\nr4 d.wav\n")
    (d / "segments").write_bytes(b"u1 r1 0 -1\nu2 r2 0 -1\nu3 r3 0" + bad + b" -1\nu4 r4 0 -1\n")
    (d / "text").write_bytes(b"u1 A\nu2 B\nu3 C\nu4 D\n")
    (d / "utt2spk").write_bytes(b"u1 s1\nu2 s1\nu3 s2\nu4 s" + bad + b"2\n")
    report = SkipReport("prepare")
    utts = {u.id: u for u in read_kaldi_data_dir(d, report=report)}
    assert utts["u1"].problem is None and utts["u1"].speaker == "s1"
    assert utts["u2"].problem.startswith("not UTF-8: train/wav.scp line 2, byte 0xe9 at column 5 ")
    assert utts["u3"].problem.startswith("not UTF-8: train/segments line 3, byte 0xe9 at column 8 ")
    assert utts["u4"].problem.startswith("not UTF-8: train/utt2spk line 4, byte 0xe9 at column 5 ")
    assert report.count == 0   # skipped later, by build_manifests, after the dev split is drawn
