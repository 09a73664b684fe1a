"""Kaldi data dirs of the prepared splits: the ``export-kaldi`` stage.

For every prepared split, ``data/<c>/kaldi/<split>/`` holds what Kaldi's ``utils/validate_data_dir.sh
--no-feats`` accepts: ``text``, ``wav.scp``, ``utt2spk``, ``spk2utt``, ``utt2dur``,
``utt2num_frames``, ``segments`` (only when the split's utterances are parts of longer recordings)
and ``spk2gender`` (only when every speaker's gender is known). The utterances are exactly those
the GMM stages trained and aligned on (the features stage's MFCC cuts), so the data dir and the
alignment archives (``exp/<c>/tri1_ali``, ``hybrid_ali``) hold the same utterances.
``data/<c>/kaldi/conf/`` holds the options the features stage computed with, as Kaldi reads them
(``mfcc.conf``, ``fbank.conf``: ``--snip-edges=false``, ``--dither=0``, ...) and the CMVN the GMM
stages applied (``cmvn_opts``: per-speaker means).

Utterance ids. Kaldi sorts every file by its first field (``LC_ALL=C`` byte order) and needs
``utt2spk`` sorted by speaker as well, which holds when speaker ids are prefixes of utterance ids.
When the corpus' own ids already sort that way (speechocean762: ``000010011`` of speaker
``0001``) they are kept, and the data dir's keys are the alignment archives' keys. When they do
not (AN4: ``an251-fash-b`` of speaker ``fash``), every split's utterances get the id
``<speaker>-<utterance id>`` (``fash-an251-fash-b``) and each split dir gets ``utt_map``:
``<Kaldi id> <pipeline id>`` lines, the key of the alignment archives being the second field.
Speaker and recording ids are never changed.

``wav.scp`` points at the audio file when Kaldi can read it as is (a ``.wav`` at the rate the
features used); other audio (AN4's FLAC, SPHERE, resampled or multi-channel recordings, piped
commands) is converted by a ``sox ... -t wav - |`` pipe, as Kaldi recipes do (``apt-get install
sox``; lhotse, ESPnet and k2 read the pipes too).

>>> ids = kaldi_utterance_ids({"an251-fash-b": "fash", "cen1-fash-b": "fash", "an86-mblw-b": "mblw"})
>>> sorted(ids.values())
['fash-an251-fash-b', 'fash-cen1-fash-b', 'mblw-an86-mblw-b']
>>> kaldi_utterance_ids({"0001-1": "0001", "0002-1": "0002"})["0002-1"]
'0002-1'
"""

from __future__ import annotations

import logging
import os
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lhotse import CutSet

from ..pipeline.io import atomic_dir, read_json
from ..pipeline.prerequisites import missing_output
from ..pipeline.stage import marker_path
from ..pipeline.workspace import Workspace

log = logging.getLogger("weakalign")

#: A cut within this much of its recording's start and end is the whole recording (half a 10 ms frame).
WHOLE_RECORDING_TOLERANCE_S = 0.005
#: What the GMM stages normalise MFCCs with (``apply-cmvn`` per speaker, means only).
CMVN_OPTS = "--norm-means=true --norm-vars=false"


@dataclass(frozen=True)
class KaldiUtterance:
    """One utterance as a Kaldi data dir lists it (``id`` is the pipeline's, before renaming)."""

    id: str
    speaker: str
    text: str
    recording: str
    start: float
    duration: float
    num_frames: int
    gender: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration


def sorts_by_speaker(utt2spk: dict[str, str]) -> bool:
    """Whether ``utt2spk`` sorted by utterance id is also sorted by speaker id (Kaldi's
    ``validate_data_dir.sh`` demands both orders to agree).

    >>> sorts_by_speaker({"spkA-1": "spkA", "spkB-1": "spkB"})
    True
    >>> sorts_by_speaker({"an1-fash": "fash", "cen1-fash": "fash", "an2-mblw": "mblw"})
    False
    """
    by_utt = sorted(utt2spk.items())
    return by_utt == sorted(by_utt, key=lambda pair: (pair[1], pair[0]))


def kaldi_utterance_ids(utt2spk: dict[str, str]) -> dict[str, str]:
    """Pipeline utterance id -> Kaldi utterance id: the same when the ids already sort by speaker
    (:func:`sorts_by_speaker`), else ``<speaker>-<id>`` for every one."""
    if sorts_by_speaker(utt2spk):
        return {utt: utt for utt in utt2spk}
    renamed = {utt: f"{spk}-{utt}" for utt, spk in utt2spk.items()}
    if not sorts_by_speaker({renamed[utt]: spk for utt, spk in utt2spk.items()}):
        # Only speaker ids that are prefixes of one another across a '-' get here (a, a-b).
        raise ValueError("no Kaldi utterance ids: even <speaker>-<utterance> ids do not sort by speaker "
                         "(speaker ids that are prefixes of each other?)")
    return renamed


def seconds(x: float) -> str:
    """Seconds as Kaldi's ``segments``/``utt2dur`` take them, to the microsecond, no trailing zeros.

    >>> seconds(3.2), seconds(0.0), seconds(12.3456789)
    ('3.2', '0', '12.345679')
    """
    return f"{x:.6f}".rstrip("0").rstrip(".")


def _sox_output(recording, channel: int | None) -> str:
    """sox's output side: 16-bit WAV at the recording's (maybe resampled) rate, one channel."""
    remix = f" remix {channel + 1}" if recording.num_channels > 1 else ""
    return f"-t wav -b 16 -r {recording.sampling_rate} -{remix} |"


def wav_scp_entry(recording, channel: int | None = None) -> str:
    """What ``wav.scp`` says for a lhotse ``recording``: its absolute path when Kaldi reads the
    file as lhotse does (a ``.wav`` at its own rate, one channel, no space in the path), else a
    ``sox`` pipe that makes it so (``channel`` picks one of several channels).

    >>> from lhotse import AudioSource, Recording
    >>> rec = Recording("r1", [AudioSource("file", [0], "/c/r1.flac")], 16000, 16000, 1.0)
    >>> wav_scp_entry(rec)
    'sox /c/r1.flac -t wav -b 16 -r 16000 - |'
    >>> wav_scp_entry(Recording("r2", [AudioSource("file", [0], "/c/r2.wav")], 16000, 16000, 1.0))
    '/c/r2.wav'
    """
    if len(recording.sources) != 1:
        raise ValueError(f"recording {recording.id}: {len(recording.sources)} audio sources; wav.scp takes one")
    source = recording.sources[0]
    resampled = bool(recording.transforms)
    if any(type(t).__name__ != "Resample" for t in recording.transforms or []):
        raise ValueError(f"recording {recording.id}: transforms other than resampling cannot go into wav.scp")
    if source.type == "file":
        path = os.path.abspath(source.source)
        as_is = (path.lower().endswith(".wav") and not resampled and recording.num_channels == 1
                 and not any(c.isspace() for c in path))
        return path if as_is else f"sox {shlex.quote(path)} {_sox_output(recording, channel)}"
    if source.type == "command":
        if not resampled and recording.num_channels == 1:
            return f"{source.source} |"
        return f"{source.source} | sox -t wav - {_sox_output(recording, channel)}"
    raise ValueError(f"recording {recording.id}: a {source.type!r} audio source cannot go into wav.scp")


def _gender(value) -> str | None:
    letter = str(value or "").strip().lower()[:1]
    return letter if letter in ("m", "f") else None


def split_utterances(cuts: CutSet) -> tuple[list[KaldiUtterance], dict[str, str]]:
    """The utterances of a split's cuts and the ``wav.scp`` entry of each recording."""
    utts, wav, channels = [], {}, defaultdict(set)
    for cut in cuts:
        sup = cut.supervisions[0]
        utts.append(KaldiUtterance(cut.id, sup.speaker or cut.id, " ".join((sup.text or "").split()),
                                   cut.recording_id, cut.start, cut.duration, cut.num_frames, _gender(sup.gender)))
        channels[cut.recording_id].add(cut.channel if isinstance(cut.channel, int) else 0)
        wav[cut.recording_id] = cut.recording
    for rec_id, used in channels.items():
        if len(used) > 1:
            raise ValueError(f"recording {rec_id}: utterances on channels {sorted(used)}; a Kaldi data dir "
                             "needs one recording id per channel")
    return utts, {rec_id: wav_scp_entry(rec, next(iter(channels[rec_id]))) for rec_id, rec in wav.items()}


def is_segment(start: float, end: float, recording_duration: float) -> bool:
    """Whether ``[start, end]`` is only part of its recording (more than half a frame is left out).

    >>> is_segment(0.0, 3.0, 3.002), is_segment(1.0, 3.0, 3.0)
    (False, True)
    """
    return start > WHOLE_RECORDING_TOLERANCE_S or end < recording_duration - WHOLE_RECORDING_TOLERANCE_S


def needs_segments(utts: list[KaldiUtterance], durations: dict[str, float]) -> bool:
    """Whether some utterance is only part of its recording (``durations``: recording -> seconds);
    two utterances of one recording (which do not overlap) make at least one of them so."""
    return any(is_segment(u.start, u.end, durations[u.recording]) for u in utts)


def data_dir_files(utts: list[KaldiUtterance], wav: dict[str, str], ids: dict[str, str],
                   segments: bool) -> dict[str, list[str]]:
    """File name -> lines of one Kaldi data dir, every file sorted by its first field.

    ``wav``: recording id -> ``wav.scp`` entry; ``ids``: pipeline utterance id -> Kaldi id
    (:func:`kaldi_utterance_ids`); ``segments``: write ``segments`` and key ``wav.scp`` by recording.
    """
    for name, value in [("utterance", u.id) for u in utts] + [("speaker", u.speaker) for u in utts]:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{name} id {value!r}: Kaldi ids are non-empty and hold no white space")
    by_id = sorted(utts, key=lambda u: ids[u.id])
    spk2utt = defaultdict(list)
    for u in by_id:
        spk2utt[u.speaker].append(ids[u.id])
    files = {
        "text": [f"{ids[u.id]} {u.text}" for u in by_id],
        "utt2spk": [f"{ids[u.id]} {u.speaker}" for u in by_id],
        "spk2utt": [f"{spk} {' '.join(spk2utt[spk])}" for spk in sorted(spk2utt)],
        "utt2dur": [f"{ids[u.id]} {seconds(u.duration)}" for u in by_id],
        "utt2num_frames": [f"{ids[u.id]} {u.num_frames}" for u in by_id],
    }
    if segments:
        files["segments"] = [f"{ids[u.id]} {u.recording} {seconds(u.start)} {seconds(u.end)}" for u in by_id]
        files["wav.scp"] = [f"{rec} {wav[rec]}" for rec in sorted({u.recording for u in utts})]
    else:
        files["wav.scp"] = [f"{ids[u.id]} {wav[u.recording]}" for u in by_id]
    genders = {u.speaker: u.gender for u in utts}
    if all(genders.values()):
        files["spk2gender"] = [f"{spk} {genders[spk]}" for spk in sorted(genders)]
    if any(kaldi != utt for utt, kaldi in ids.items()):
        files["utt_map"] = [f"{ids[u.id]} {u.id}" for u in by_id]
    return files


def write_data_dir(path: Path, files: dict[str, list[str]]) -> None:
    """Replace the directory ``path`` with ``files`` (name -> lines), UTF-8, ``\\n`` after every line."""
    with atomic_dir(path) as tmp:
        for name, lines in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(line + "\n" for line in lines)


# ---------------------------------------------------------------- feature options

#: kaldi-native-fbank option name -> Kaldi's command-line option, per option group. The knf options
#: not listed (``mel_opts.norm``, ``is_librosa``, ...) are knf's own and at the values that behave as Kaldi.
_FRAME_OPTIONS = {"samp_freq": "sample-frequency", "frame_shift_ms": "frame-shift", "frame_length_ms": "frame-length",
                  "dither": "dither", "preemph_coeff": "preemphasis-coefficient",
                  "remove_dc_offset": "remove-dc-offset", "window_type": "window-type",
                  "round_to_power_of_two": "round-to-power-of-two", "blackman_coeff": "blackman-coeff",
                  "snip_edges": "snip-edges"}
_MEL_OPTIONS = {"num_bins": "num-mel-bins", "low_freq": "low-freq", "high_freq": "high-freq",
                "vtln_low": "vtln-low", "vtln_high": "vtln-high"}
_MFCC_OPTIONS = {"num_ceps": "num-ceps", "use_energy": "use-energy", "energy_floor": "energy-floor",
                 "raw_energy": "raw-energy", "cepstral_lifter": "cepstral-lifter", "htk_compat": "htk-compat"}
_FBANK_OPTIONS = {"use_energy": "use-energy", "energy_floor": "energy-floor", "raw_energy": "raw-energy",
                  "htk_compat": "htk-compat", "use_log_fbank": "use-log-fbank", "use_power": "use-power"}


def _option_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def kaldi_options(opts, top_level: dict[str, str]) -> list[str]:
    """``--name=value`` lines of a kaldi-native-fbank ``MfccOptions``/``FbankOptions``, as
    ``compute-mfcc-feats --config=...`` / ``compute-fbank-feats --config=...`` read them.

    >>> from weakalign.pipeline.acoustic_features import knf_mfcc_options
    >>> lines = kaldi_options(knf_mfcc_options(), _MFCC_OPTIONS)
    >>> [line for line in lines if line.startswith(("--snip", "--dither", "--num-ceps"))]
    ['--dither=0', '--snip-edges=false', '--num-ceps=13']
    """
    groups = [(opts.frame_opts, _FRAME_OPTIONS), (opts.mel_opts, _MEL_OPTIONS), (opts, top_level)]
    return [f"--{kaldi}={_option_value(getattr(group, knf))}"
            for group, names in groups for knf, kaldi in names.items()]


def feature_conf_files(feature_config: dict) -> dict[str, list[str]]:
    """``mfcc.conf``, ``fbank.conf`` and ``cmvn_opts`` from the features stage's ``feature_config``."""
    from ..pipeline.acoustic_features import KnfFbankConfig, KnfMfccConfig, knf_fbank_options, knf_mfcc_options

    return {"mfcc.conf": kaldi_options(knf_mfcc_options(KnfMfccConfig.from_dict(feature_config["mfcc"])),
                                       _MFCC_OPTIONS),
            "fbank.conf": kaldi_options(knf_fbank_options(KnfFbankConfig.from_dict(feature_config["fbank"])),
                                        _FBANK_OPTIONS),
            "cmvn_opts": [CMVN_OPTS]}


# ---------------------------------------------------------------- the stage

def default_kaldi_dir(ws: Workspace) -> Path:
    return ws.data / "kaldi"


def features_config(ws: Workspace) -> dict:
    """The options the features stage ran with (its done-marker's ``feature_config``)."""
    marker = marker_path(ws, "features")
    if not marker.exists():
        raise missing_output(ws, "export-kaldi", marker)
    return read_json(marker)["summary"]["feature_config"]


def export_kaldi_stage(ws: Workspace, *, kaldi_dir: str | os.PathLike | None = None) -> dict:
    """Stage ``export-kaldi``: a Kaldi data dir per prepared split under ``kaldi_dir`` (default
    ``data/<c>/kaldi``), plus ``conf/`` (see the module's docstring)."""
    out = Path(kaldi_dir) if kaldi_dir is not None else default_kaldi_dir(ws)
    splits = ws.available_splits()
    if not splits:
        raise missing_output(ws, "export-kaldi", ws.data / "manifests")
    conf = feature_conf_files(features_config(ws))
    per_split = {}
    for split in splits:
        cuts = CutSet.from_file(ws.mfcc_cuts(split))
        utts, wav = split_utterances(cuts)
        per_split[split] = (utts, wav, {c.recording_id: c.recording.duration for c in cuts})
    # One rule for every split: an utterance has the same Kaldi id wherever it is listed.
    ids = kaldi_utterance_ids({u.id: u.speaker for utts, _, _ in per_split.values() for u in utts})
    counts = {}
    for split, (utts, wav, durations) in per_split.items():
        segments = needs_segments(utts, durations)
        write_data_dir(out / split, data_dir_files(utts, wav, ids, segments))
        counts[split] = {"utterances": len(utts), "speakers": len({u.speaker for u in utts}),
                         "recordings": len(wav), "segments": segments,
                         "sox_pipes": sum(entry.endswith("|") for entry in wav.values())}
        log.info("export-kaldi %s: %d utterances, %d speakers%s -> %s", split, len(utts),
                 counts[split]["speakers"], " (segments)" if segments else "", out / split)
    write_data_dir(out / "conf", conf)
    renamed = any(kaldi != utt for utt, kaldi in ids.items())
    return {"kaldi_dir": str(out), "utterance_ids": "<speaker>-<id> (utt_map)" if renamed else "as in the corpus",
            "splits": counts, "outputs": [str(out / split / "wav.scp") for split in counts] + [str(out / "conf")]}
