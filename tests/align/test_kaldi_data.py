"""``weakalign export-kaldi`` (issue #18, item 4): Kaldi data dirs of the AN4 slice, checked with a
re-implementation of the rules of Kaldi's ``utils/validate_data_dir.sh --no-feats`` and read back
by kaldiio and the project's own Kaldi readers, against the alignment archives' keys.
"""

import kaldi_hmm_gmm as khg  # noqa: F401  -- before kaldifst

import io
import os
import shutil
from pathlib import Path

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import pytest
from click.testing import CliRunner
from lhotse import AudioSource, CutSet, Recording

from tests.fixtures_align import linked_workspace
from weakalign.align.kaldi_data import (KaldiUtterance, data_dir_files, kaldi_utterance_ids, wav_scp_entry,
                                        write_data_dir)
from weakalign.kaldi_steps.kaldi_io import read_ali_dir
from weakalign.pipeline.cli import cli
from weakalign.pipeline.corpora.kaldi_dir import read_kaldi_data_dir, read_table as read_kaldi_table
from weakalign.pipeline.io import read_json
from weakalign.pipeline.report import SkipReport
from weakalign.pipeline.stage import marker_path

SPLITS = ("train", "dev", "test")


# ---------------------------------------------------------------- validate_data_dir.sh's rules, in Python


def read_table(path: Path) -> list[tuple[str, str]]:
    """``(key, rest of line)`` pairs of a Kaldi table file, in file order, read as ``prepare`` reads them."""
    return list(read_kaldi_table(path, SkipReport("test")).values.items())

def _lines(path: Path, errors: list[str]) -> list[str]:
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        errors.append(f"{path.name}: last line has no newline")
    text = raw.decode("utf-8")  # raises on invalid UTF-8, as validate_text.pl refuses it
    if "\r" in text:
        errors.append(f"{path.name}: carriage return")
    return text.splitlines()


def _c_order(strings: list[str]) -> list[str]:
    """``LC_ALL=C sort``: byte order of the UTF-8."""
    return sorted(strings, key=lambda s: s.encode("utf-8"))


def _sorted_and_unique(name: str, lines: list[str], errors: list[str]) -> list[str]:
    keys = [line.split()[0] if line.split() else "" for line in lines]
    if keys != _c_order(set(keys)):
        errors.append(f"{name}: not in sorted order or has duplicates")
    return keys


def validate_data_dir(d: Path) -> list[str]:
    """What ``utils/validate_data_dir.sh --no-feats d`` would complain about ([] when it accepts d),
    plus the prefix rule it recommends (speaker ids prefixes of utterance ids)."""
    errors: list[str] = []
    files = {name: _lines(d / name, errors) for name in
             ("utt2spk", "spk2utt", "text", "wav.scp", "segments", "spk2gender", "utt2dur", "utt2num_frames")
             if (d / name).exists()}
    for required in ("utt2spk", "spk2utt", "text", "wav.scp"):
        if not files.get(required):
            return errors + [f"{required}: missing or empty"]
    utt2spk = files["utt2spk"]
    if any(len(line.split()) != 2 for line in utt2spk):
        return errors + ["utt2spk: a line without exactly 2 fields"]
    utts = _sorted_and_unique("utt2spk", utt2spk, errors)
    # sort -k2: the key runs from the blank before field 2 to the end of the line; ties by the whole line
    by_speaker = sorted(utt2spk, key=lambda l: (l[len(l.split()[0]):].encode(), l.encode()))
    if by_speaker != utt2spk:
        errors.append("utt2spk: not sorted by speaker id as well (make speaker ids prefixes of utterance ids)")
    if not all(utt.startswith(line.split()[1]) for utt, line in zip(utts, utt2spk)):
        errors.append("utt2spk: a speaker id is not a prefix of its utterance id")
    speakers = _sorted_and_unique("spk2utt", files["spk2utt"], errors)
    expanded = [f"{utt} {line.split()[0]}" for line in files["spk2utt"] for utt in line.split()[1:]]
    if expanded != [" ".join(line.split()) for line in utt2spk]:
        errors.append("spk2utt and utt2spk do not match")
    if _sorted_and_unique("text", files["text"], errors) != utts:
        errors.append("text: utterances differ from utt2spk's")
    if any(w in ("<s>", "</s>", "#0") for line in files["text"] for w in line.split()[1:]):
        errors.append("text: illegal symbol <s>, </s> or #0")
    wav_keys = _sorted_and_unique("wav.scp", files["wav.scp"], errors)
    if any(len(line.split()) > 1 and line.split()[1].startswith("~") for line in files["wav.scp"]):
        errors.append("wav.scp: a path starting with ~")
    if "segments" in files:
        segments = files["segments"]
        if _sorted_and_unique("segments", segments, errors) != utts:
            errors.append("segments: utterances differ from utt2spk's")
        if any(len(s.split()) != 4 or not float(s.split()[3]) > float(s.split()[2]) for s in segments):
            errors.append("segments: a bad line")
        if _c_order({s.split()[1] for s in segments}) != wav_keys:
            errors.append("segments: recordings differ from wav.scp's")
    elif wav_keys != utts:
        errors.append("wav.scp: utterances differ from utt2spk's")
    if "spk2gender" in files:
        if _sorted_and_unique("spk2gender", files["spk2gender"], errors) != speakers:
            errors.append("spk2gender: speakers differ from spk2utt's")
        if any(line.split()[1:] not in (["m"], ["f"]) for line in files["spk2gender"]):
            errors.append("spk2gender: a value that is not m or f")
    for name, valid in (("utt2dur", lambda v: float(v) > 0), ("utt2num_frames", lambda v: v.isdigit() and int(v) > 0)):
        if name in files:
            if _sorted_and_unique(name, files[name], errors) != utts:
                errors.append(f"{name}: utterances differ from utt2spk's")
            if any(len(line.split()) != 2 or not valid(line.split()[1]) for line in files[name]):
                errors.append(f"{name}: a bad line")
    return errors


# ---------------------------------------------------------------- the AN4 slice, exported by the command

@pytest.fixture(scope="module")
def exported(an4_slice_tri1, tmp_path_factory):
    """A workspace linking the slice's manifests, MFCC, fbank and tri1_ali, with its features
    marker, after ``weakalign export-kaldi``."""
    ws = linked_workspace(an4_slice_tri1, tmp_path_factory.mktemp("kaldi") / "ws",
                          data_dirs=("manifests", "mfcc", "fbank"))
    ws.done_dir.mkdir(parents=True)
    shutil.copy(marker_path(an4_slice_tri1, "features"), marker_path(ws, "features"))
    result = CliRunner().invoke(cli, ["export-kaldi", "an4", "--data-root", str(ws.data_root),
                                      "--exp-root", str(ws.exp_root)])
    assert result.exit_code == 0, result.output
    return ws


def split_dir(ws, split) -> Path:
    return ws.data / "kaldi" / split


def test_every_split_is_a_valid_kaldi_data_dir_with_speaker_prefixed_ids(exported):
    for split in SPLITS:
        d = split_dir(exported, split)
        assert validate_data_dir(d) == [], split
        assert sorted(p.name for p in d.iterdir()) == ["spk2gender", "spk2utt", "text", "utt2dur", "utt2num_frames",
                                                      "utt2spk", "utt_map", "wav.scp"]   # no segments: whole recordings
        assert all(gender == spk[0] for spk, gender in read_table(d / "spk2gender"))   # AN4: fash is f
    utt_map = read_table(split_dir(exported, "train") / "utt_map")
    assert all(kaldi == f"{utt.split('-')[1]}-{utt}" for kaldi, utt in utt_map)   # AN4: an251-fash-b of fash
    assert read_json(marker_path(exported, "export-kaldi"))["summary"]["utterance_ids"] == "<speaker>-<id> (utt_map)"


def test_the_checks_catch_what_validate_data_dir_refuses(exported, tmp_path):
    """The rules above can fail: AN4's own ids (not speaker-prefixed), an unsorted text, a lost line."""
    broken = tmp_path / "broken"
    shutil.copytree(split_dir(exported, "train"), broken)
    utt_map = dict(read_table(broken / "utt_map"))
    for name in ("utt2spk", "text"):
        rows = read_table(broken / name)
        (broken / name).write_text("".join(f"{k} {v}\n" for k, v in sorted((utt_map[k], v) for k, v in rows)))
    assert any("sorted by speaker" in e for e in validate_data_dir(broken))
    shutil.rmtree(broken)
    shutil.copytree(split_dir(exported, "train"), broken)
    text = (broken / "text").read_text().splitlines(keepends=True)
    (broken / "text").write_text("".join(text[1:2] + text[:1] + text[2:]))
    assert validate_data_dir(broken)[0] == "text: not in sorted order or has duplicates"
    (broken / "text").write_text("".join(text[1:]))
    assert validate_data_dir(broken) == ["text: utterances differ from utt2spk's"]


def tri1_failures(ws, split: str) -> int:
    """How many of ``split``'s utterances tri1 could not align (``tri1_ali/splits.json``)."""
    return read_json(ws.exp / "tri1_ali" / "splits.json")[split]["failed"]


def test_keys_are_the_alignment_archives_through_utt_map(exported):
    """Through ``utt_map``, each split's keys are tri1_ali's utterances of that split (train, dev, test);
    kaldiio and the project's data-dir reader see the same keys, texts and speakers."""
    import kaldiio

    alignments = read_ali_dir(exported.exp / "tri1_ali")
    utt2split = dict(read_table(exported.exp / "tri1_ali" / "utt2split"))
    for split in SPLITS:
        d = split_dir(exported, split)
        utt_map = dict(read_table(d / "utt_map"))
        keys = [k for k, _ in read_table(d / "utt2spk")]
        assert list(kaldiio.load_scp(str(d / "wav.scp")).keys()) == keys
        cuts = CutSet.from_file(exported.mfcc_cuts(split)).to_eager()
        assert {utt_map[k] for k in keys} == set(cuts.ids)             # what the GMM stages read
        aligned = {utt for utt in alignments if utt2split[utt] == split}
        # tri1 force-aligns every split; on the slice's tiny model one test utterance fails to align
        assert aligned <= set(cuts.ids) and len(cuts) - len(aligned) == tri1_failures(exported, split)
        sups = {c.id: c.supervisions[0] for c in cuts}
        read_back = read_kaldi_data_dir(d)
        assert [u.id for u in read_back] == keys
        assert all(u.text == sups[utt_map[u.id]].text and u.speaker == sups[utt_map[u.id]].speaker
                   for u in read_back)
        frames = dict(read_table(d / "utt2num_frames"))
        assert all(len(alignments[utt_map[k]]) == int(frames[k]) for k in keys if utt_map[k] in alignments)


def test_wav_scp_pipes_give_the_samples_lhotse_reads(exported):
    import kaldiio

    assert shutil.which("sox"), "wav.scp's FLAC pipes need sox: apt-get install sox (make test does)"

    d = split_dir(exported, "dev")
    key, entry = read_table(d / "wav.scp")[0]
    assert entry.startswith("sox ") and entry.endswith("|")
    rate, samples = kaldiio.load_scp(str(d / "wav.scp"))[key]
    cut = CutSet.from_file(exported.mfcc_cuts("dev")).to_eager()[dict(read_table(d / "utt_map"))[key]]
    assert rate == 16000
    np.testing.assert_array_equal(samples, np.round(cut.load_audio()[0] * 32768).astype(np.int16))


def _knf_options(conf: Path, opts):
    """Set kaldi-native-fbank options from a Kaldi ``--name=value`` config (the test's own parser)."""
    groups = {"frame": opts.frame_opts, "mel": opts.mel_opts, "top": opts}
    names = {"sample-frequency": ("frame", "samp_freq"), "frame-shift": ("frame", "frame_shift_ms"),
             "frame-length": ("frame", "frame_length_ms"), "dither": ("frame", "dither"),
             "preemphasis-coefficient": ("frame", "preemph_coeff"), "remove-dc-offset": ("frame", "remove_dc_offset"),
             "window-type": ("frame", "window_type"), "round-to-power-of-two": ("frame", "round_to_power_of_two"),
             "blackman-coeff": ("frame", "blackman_coeff"), "snip-edges": ("frame", "snip_edges"),
             "num-mel-bins": ("mel", "num_bins"), "low-freq": ("mel", "low_freq"), "high-freq": ("mel", "high_freq"),
             "vtln-low": ("mel", "vtln_low"), "vtln-high": ("mel", "vtln_high")}
    for line in conf.read_text().split():
        name, value = line[2:].split("=")
        group, attr = names.get(name, ("top", name.replace("-", "_")))
        current = getattr(groups[group], attr)
        setattr(groups[group], attr, value == "true" if isinstance(current, bool) else type(current)(value))
    return opts


def test_the_conf_files_recompute_the_features_stage_mfcc_and_fbank(exported):
    """Kaldi-style ``mfcc.conf``/``fbank.conf``, fed to kaldi-native-fbank from scratch, compute the
    features the stage stored: the MFCCs as ``make_mfcc.sh`` stores them (``copy-feats --compress=true``),
    the fbank up to lilcom's compression; ``cmvn_opts`` is per-speaker means."""
    conf = exported.data / "kaldi" / "conf"
    assert "--snip-edges=false" in (conf / "mfcc.conf").read_text().split()
    assert (conf / "cmvn_opts").read_text() == "--norm-means=true --norm-vars=false\n"
    for kind, opts, computer, cuts_path in (
            ("mfcc", knf.MfccOptions(), knf.OnlineMfcc, exported.mfcc_cuts("dev")),
            ("fbank", knf.FbankOptions(), knf.OnlineFbank, exported.fbank_cuts("dev"))):
        cut = CutSet.from_file(cuts_path).to_eager()[0]
        online = computer(_knf_options(conf / f"{kind}.conf", opts))
        online.accept_waveform(16000, (cut.load_audio()[0] * 32768).astype(np.float32))
        online.input_finished()
        feats = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
        stored = cut.load_features()
        assert feats.shape == stored.shape, kind
        if kind == "mfcc":   # Kaldi's compression of them (kaldiio's implementation): one code apart at most
            buf = io.BytesIO()
            kaldiio.save_ark(buf, {"u": feats}, compression_method=1)
            buf.seek(0)
            np.testing.assert_allclose(dict(kaldiio.load_ark(buf))["u"], stored, atol=5e-3, err_msg=kind)
        else:
            np.testing.assert_allclose(feats, stored, atol=0.05, err_msg=kind)


def test_a_rerun_is_already_done_and_a_new_kaldi_dir_is_a_new_request(exported, tmp_path):
    args = ["export-kaldi", "an4", "--data-root", str(exported.data_root), "--exp-root", str(exported.exp_root)]
    assert "already done" in CliRunner().invoke(cli, args).output
    result = CliRunner().invoke(cli, args + ["--kaldi-dir", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert validate_data_dir(tmp_path / "k" / "dev") == [] and (tmp_path / "k" / "conf" / "mfcc.conf").exists()


# ---------------------------------------------------------------- segments, genders, ids: small made-up dirs

def _utt(id, speaker, rec, start, dur, gender=None):
    return KaldiUtterance(id, speaker, "HELLO WORLD", rec, start, dur, round(dur * 100), gender)


def test_parts_of_recordings_get_segments_and_wav_scp_by_recording(tmp_path):
    utts = [_utt("s1-b", "s1", "rec1", 3.0, 2.5, "f"), _utt("s1-a", "s1", "rec1", 0.5, 2.0, "f"),
            _utt("s2-a", "s2", "rec2", 0.0, 1.25, "m")]
    wav = {"rec1": "/c/rec1.wav", "rec2": "sox /c/rec2.flac -t wav -b 16 -r 16000 - |"}
    files = data_dir_files(utts, wav, kaldi_utterance_ids({u.id: u.speaker for u in utts}), segments=True)
    write_data_dir(tmp_path / "d", files)
    assert validate_data_dir(tmp_path / "d") == []
    assert files["segments"] == ["s1-a rec1 0.5 2.5", "s1-b rec1 3 5.5", "s2-a rec2 0 1.25"]
    assert files["wav.scp"] == ["rec1 /c/rec1.wav", "rec2 sox /c/rec2.flac -t wav -b 16 -r 16000 - |"]
    assert files["spk2gender"] == ["s1 f", "s2 m"] and "utt_map" not in files
    del files["segments"]                              # without segments wav.scp must be keyed by utterance
    write_data_dir(tmp_path / "d", files)
    assert validate_data_dir(tmp_path / "d") == ["wav.scp: utterances differ from utt2spk's"]


def test_a_speaker_of_unknown_gender_leaves_out_spk2gender():
    utts = [_utt("a-1", "a", "r1", 0, 1, "f"), _utt("b-1", "b", "r2", 0, 1)]
    files = data_dir_files(utts, {"r1": "/r1.wav", "r2": "/r2.wav"}, {"a-1": "a-1", "b-1": "b-1"}, segments=False)
    assert "spk2gender" not in files and files["wav.scp"] == ["a-1 /r1.wav", "b-1 /r2.wav"]


def test_ids_that_cannot_sort_by_speaker_even_prefixed_are_refused():
    with pytest.raises(ValueError, match="do not sort by speaker"):
        kaldi_utterance_ids({"x": "a", "y": "a-b", "a-z": "q"})


def test_wav_scp_converts_what_kaldi_cannot_read_as_is():
    def rec(path, channels=1, rate=16000):
        return Recording(Path(path).stem, [AudioSource("file", list(range(channels)), path)], rate, rate, 1.0)

    assert wav_scp_entry(rec("/c/a.wav")) == "/c/a.wav"
    assert wav_scp_entry(rec("/c/a b.wav")) == "sox '/c/a b.wav' -t wav -b 16 -r 16000 - |"
    assert wav_scp_entry(rec("/c/a.wav", channels=2), channel=1) == "sox /c/a.wav -t wav -b 16 -r 16000 - remix 2 |"
    assert wav_scp_entry(rec("/c/a.wav", rate=8000).resample(16000)) == "sox /c/a.wav -t wav -b 16 -r 16000 - |"
    piped = Recording("p", [AudioSource("command", [0], "sph2pipe -f wav /c/p.sph")], 16000, 16000, 1.0)
    assert wav_scp_entry(piped) == "sph2pipe -f wav /c/p.sph |"
    assert os.path.isabs(wav_scp_entry(rec("rel/a.wav")))
