"""The ``prepare`` recipes on the real corpora and on small trees built here from real AN4 audio."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, RecordingSet, SupervisionSet

from weakalign.pipeline.corpora import prepare
from weakalign.pipeline.corpora.an4 import parse_transcription_line
from weakalign.pipeline.corpora.tedlium import IGNORE
from weakalign.pipeline.features import compute_features
from weakalign.pipeline.stage import marker_path, run_stage
from weakalign.pipeline.workspace import Workspace


def _ws(tmp_path, corpus):
    return Workspace(corpus, data_root=tmp_path / "data", exp_root=tmp_path / "exp")


def _sups(ws, split):
    return SupervisionSet.from_file(ws.manifest("supervisions", split))


def _an4_flacs(corpora_dir, n):
    files = sorted((corpora_dir / "an4" / "wav" / "an4_clstk").glob("*/*.flac"))
    return files[:n]


def test_an4_sphinx_line_parsing():
    assert parse_transcription_line("<s> GO </s> (an253-fash-b)") == ("an253-fash-b", "GO")
    assert parse_transcription_line("RUBOUT G M (an406-fcaw-b)") == ("an406-fcaw-b", "RUBOUT G M")
    assert parse_transcription_line("no id here") is None


def test_an4_full_manifests_counts_and_speaker_disjoint_dev(tmp_path, corpora_dir):
    ws = _ws(tmp_path, "an4")
    summary = run_stage("prepare", ws, prepare, src=corpora_dir / "an4")
    sups = {s: _sups(ws, s) for s in ("train", "dev", "test")}
    assert len(sups["train"]) + len(sups["dev"]) == 948
    assert len(sups["test"]) == 130
    assert 80 <= len(sups["dev"]) <= 120
    spk = {s: {x.speaker for x in ss} for s, ss in sups.items()}
    assert not spk["train"] & spk["dev"]
    # Corpus ids and speakers kept; text upper-case without sentence markers.
    s = {x.id: x for x in sups["test"]}["an406-fcaw-b"]
    assert s.speaker == "fcaw" and s.text == "RUBOUT G M E F THREE NINE" and s.gender == "f"
    assert all(x.gender == x.speaker[0] for ss in sups.values() for x in ss)   # AN4 ids start with m/f
    assert all("<S>" not in x.text and x.text == x.text.upper() for x in sups["train"])
    recs = RecordingSet.from_file(ws.manifest("recordings", "test"))
    assert {r.id: r for r in recs}["an406-fcaw-b"].sampling_rate == 16000
    assert summary["skipped"] == 0 and summary["splits"]["dev"]["utterances"] == len(sups["dev"])


def test_speechocean762_full_counts_and_stratified_dev(tmp_path, corpora_dir):
    ws = _ws(tmp_path, "speechocean762")
    run_stage("prepare", ws, prepare, src=corpora_dir / "speechocean762")
    train, dev = _sups(ws, "train"), _sups(ws, "dev")
    assert len(train) + len(dev) == 2500
    assert not ws.manifest("supervisions", "test").exists()
    dev_spk = {s.speaker for s in dev}
    assert 10 <= len(dev_spk) <= 15 and not dev_spk & {s.speaker for s in train}
    ages = dict(line.split() for line in (corpora_dir / "speechocean762/train/spk2age").read_text().splitlines())
    assert {int(ages[s]) <= 15 for s in dev_spk} == {True, False}  # children and adults in dev
    genders = dict(line.split() for line in (corpora_dir / "speechocean762/train/spk2gender").read_text().splitlines())
    assert all(s.gender == genders[s.speaker] for s in train + dev)   # spk2gender carried into the supervisions
    assert {s.gender for s in train} == {"m", "f"}


def test_speechocean762_test_half_adds_test_and_leaves_train_untouched(tmp_path, corpora_dir):
    so = corpora_dir / "speechocean762"
    ws = _ws(tmp_path, "speechocean762")
    run_stage("prepare", ws, prepare, src=so, max_utts_per_split=6, utts_per_speaker=3)
    before = {s: ws.manifest(k, s).read_bytes() for s in ("train", "dev") for k in ("recordings",)}
    # A "test half" laid out as the corpus ships it: test/ with wav.scp relative to the corpus dir.
    half = tmp_path / "so_test_half"
    (half / "test").mkdir(parents=True)
    (half / "WAVE").symlink_to(so / "WAVE")
    lines = (so / "train" / "wav.scp").read_text().splitlines()[:4]
    (half / "test" / "wav.scp").write_text("\n".join(lines) + "\n")
    ids = [line.split()[0] for line in lines]
    text = dict(line.split(maxsplit=1) for line in (so / "train" / "text").read_text().splitlines())
    (half / "test" / "text").write_text("".join(f"{i} {text[i]}\n" for i in ids))
    (half / "test" / "utt2spk").write_text("".join(f"{i} {i[:5]}\n" for i in ids))
    # The slice asked for above is recorded and would hold for this request too: ask for whole splits.
    summary = run_stage("prepare", ws, prepare, src=half, recipe="speechocean762", force=True,
                        max_utts_per_split=None, utts_per_speaker=None)
    assert set(summary["splits"]) == {"test"}
    assert len(_sups(ws, "test")) == 4
    assert {s: ws.manifest("recordings", s).read_bytes() for s in ("train", "dev")} == before
    assert ws.available_splits() == ["train", "dev", "test"]


def test_kaldi_data_dir_with_plain_piped_and_segmented_audio(tmp_path, corpora_dir):
    flacs = _an4_flacs(corpora_dir, 4)
    src = tmp_path / "mycorpus"
    (src / "train").mkdir(parents=True)
    (src / "audio").mkdir()
    # rec3: two real utterances joined into one recording, cut by a segments file.
    a, b = (sf.read(f, dtype="int16")[0] for f in flacs[2:4])
    sf.write(src / "audio" / "rec3.wav", np.concatenate([a, b]), 16000)
    split_at = len(a) / 16000
    (src / "train" / "wav.scp").write_text(
        f"rec1 {flacs[0]}\n"
        f"rec2 cat {flacs[1]} |\n"
        f"rec3 audio/rec3.wav\n")
    (src / "train" / "segments").write_text(
        f"u1 rec1 0 -1\nu2 rec2 0.0 -1\nu3a rec3 0.00 {split_at:.2f}\nu3b rec3 {split_at:.2f} {len(a) / 16000 + len(b) / 16000:.2f}\n")
    (src / "train" / "text").write_text("u1 one\nu2 two words\nu3a three a\nu3b three b\n")
    (src / "train" / "utt2spk").write_text("u1 s1\nu2 s2\nu3a s3\nu3b s3\n")
    (src / "train" / "spk2gender").write_text("s1 F\ns2 unknown\n")   # s3: not listed
    ws = _ws(tmp_path, "mycorpus")
    summary = run_stage("prepare", ws, prepare, src=src, recipe="kaldi")
    assert summary["skipped"] == 0
    sups = {s.id: s for split in summary["splits"] for s in _sups(ws, split)}
    assert set(sups) == {"u1", "u2", "u3a", "u3b"} and set(summary["splits"]) == {"train", "dev"}
    assert sups["u3b"].recording_id == "rec3" and sups["u3b"].start == pytest.approx(split_at, abs=0.01)
    assert sups["u2"].text == "TWO WORDS"
    assert [sups[u].gender for u in ("u1", "u2", "u3a")] == ["f", None, None]   # only m/f are genders
    recs = {r.id: r for split in summary["splits"] for r in RecordingSet.from_file(ws.manifest("recordings", split))}
    assert recs["rec2"].sources[0].type == "command"
    run_stage("features", ws, compute_features, nj=1)
    cuts = {c.id: c for split in summary["splits"] for c in CutSet.from_file(ws.mfcc_cuts(split))}
    assert set(cuts) == set(sups)
    for cid, cut in cuts.items():
        assert abs(cut.load_features().shape[0] - round(sups[cid].duration / 0.01)) <= 1, cid
    # The piped recording is read whole: its frame count is the piped file's.
    assert cuts["u2"].load_features().shape[0] == (sf.info(str(flacs[1])).frames + 80) // 160


def _write_talk(path: Path, utterances: list[np.ndarray], gap: float = 0.3) -> list[tuple[float, float]]:
    """Join real utterances with short silences into one NIST SPHERE file; return their times."""
    pieces, times, t = [], [], 0.0
    silence = np.zeros(int(gap * 16000), dtype=np.int16)
    for u in utterances:
        pieces += [silence, u]
        start = t + gap
        t = start + len(u) / 16000
        times.append((start, t))
    sf.write(path, np.concatenate(pieces + [silence]), 16000, format="NIST", subtype="PCM_16")
    return times


def test_tedlium2_layout_drops_ignored_segments_and_gives_features(tmp_path, corpora_dir):
    flacs = _an4_flacs(corpora_dir, 6)
    root = tmp_path / "TEDLIUM_release2"
    lines_by_talk = {}
    for split, talk, files in (("train", "TalkA_2010", flacs[:3]), ("train", "TalkB_2011", flacs[3:5]),
                               ("test", "TalkC_2012", flacs[5:6])):
        (root / split / "sph").mkdir(parents=True, exist_ok=True)
        (root / split / "stm").mkdir(parents=True, exist_ok=True)
        times = _write_talk(root / split / "sph" / f"{talk}.sph", [sf.read(f, dtype="int16")[0] for f in files])
        lines = [f"{talk} 1 {talk} {s:.2f} {e:.2f} <o,f0,female> word{i} it's(2) <unk>" for i, (s, e) in
                 enumerate(times)]
        lines.insert(1, f"{talk} 1 inter_segment_gap 0.00 0.30 <o,,unknown> {IGNORE}")
        (root / split / "stm" / f"{talk}.stm").write_text("\n".join(lines) + "\n")
        lines_by_talk[talk] = times
    ws = _ws(tmp_path, "tedlium2")
    summary = run_stage("prepare", ws, prepare, src=root)
    assert summary["recipe"] == "tedlium2" and summary["skipped"] == 0
    all_sups = [s for split in summary["splits"] for s in _sups(ws, split)]
    assert len(all_sups) == 6  # the ignored segments are gone
    assert all(IGNORE.upper() not in s.text for s in all_sups)
    s = next(x for x in all_sups if x.recording_id == "TalkA_2010" and x.text.startswith("WORD1"))
    assert s.text == "WORD1 IT'S <UNK>" and s.speaker == "TalkA_2010"
    assert s.start == pytest.approx(lines_by_talk["TalkA_2010"][1][0], abs=0.01)
    assert s.id == f"TalkA_2010-{round(s.start * 100):07d}-{round((s.start + s.duration) * 100):07d}"
    run_stage("features", ws, compute_features, nj=1)
    for split in summary["splits"]:
        for cut in CutSet.from_file(ws.fbank_cuts(split)):
            feats = cut.load_features()
            assert feats.shape[1] == 80 and abs(feats.shape[0] - cut.duration / 0.01) <= 1
            assert np.isfinite(feats).all()


def test_interrupted_features_stage_leaves_no_marker_or_half_file_and_resumes(tmp_path, corpora_dir, monkeypatch):
    ws = _ws(tmp_path, "an4")
    run_stage("prepare", ws, prepare, src=corpora_dir / "an4", max_utts_per_split=4, utts_per_speaker=2)
    from weakalign.pipeline import features

    calls = {"n": 0}
    real_extract = features.KnfFbank.extract

    def extract_then_die(self, samples, sampling_rate):
        calls["n"] += 1
        if calls["n"] == 6:  # in the middle of the dev split's fbank
            raise KeyboardInterrupt("killed")
        return real_extract(self, samples, sampling_rate)

    monkeypatch.setattr(features.KnfFbank, "extract", extract_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_stage("features", ws, compute_features, nj=1)
    assert not marker_path(ws, "features").exists()
    assert ws.fbank_cuts("train").exists() and not ws.fbank_cuts("dev").exists()
    assert not [p for p in ws.data.rglob(".tmp*")]
    monkeypatch.setattr(features.KnfFbank, "extract", real_extract)
    summary = run_stage("features", ws, compute_features, nj=1)
    assert marker_path(ws, "features").exists()
    for split in ("train", "dev", "test"):
        assert len(CutSet.from_file(ws.fbank_cuts(split))) == len(_sups(ws, split)) == summary["splits"][split]["cuts"]


def test_cli_prepare_and_features_with_a_slice(tmp_path, corpora_dir):
    from click.testing import CliRunner

    from weakalign.pipeline.cli import cli

    roots = ["--data-root", str(tmp_path / "data"), "--exp-root", str(tmp_path / "exp")]
    env = {"WEAKALIGN_CORPORA": str(corpora_dir)}
    r = CliRunner().invoke(cli, ["prepare", "an4", *roots, "--max-utts-per-split", "train=4,dev=2,test=2",
                                 "--utts-per-speaker", "2"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["features", "an4", *roots, "--nj", "1"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    ws = _ws(tmp_path, "an4")
    assert [len(_sups(ws, s)) for s in ("train", "dev", "test")] == [4, 2, 2]
    assert len(CutSet.from_file(ws.mfcc_cuts("test"))) == 2
    assert os.path.exists(ws.fbank_stats)


def test_other_sample_rate_is_resampled_by_lhotse_for_features(tmp_path, corpora_dir):
    # Lhotse resamples with scipy when torchaudio is absent (as here): scipy must be a dependency.
    pytest.importorskip("scipy", reason="lhotse needs scipy to resample without torchaudio; add it to pyproject")
    flac = _an4_flacs(corpora_dir, 1)[0]
    x, _ = sf.read(flac, dtype="int16")
    src = tmp_path / "rates" / "test"
    src.mkdir(parents=True)
    sf.write(src / "u8k.wav", x[::2], 8000)
    (src / "wav.scp").write_text(f"u8k {src / 'u8k.wav'}\n")
    (src / "text").write_text("u8k eight kilohertz\n")
    ws = _ws(tmp_path, "rates")
    run_stage("prepare", ws, prepare, src=src, recipe="kaldi")
    run_stage("features", ws, compute_features, nj=1)
    cut = CutSet.from_file(ws.fbank_cuts("test"))[0]
    feats = cut.load_features()
    assert cut.recording.sampling_rate == 16000
    assert feats.shape == ((2 * (len(x) // 2) + 80) // 160, 80) and np.isfinite(feats).all()
