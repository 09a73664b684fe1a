"""Kaldi data directories: ``wav.scp`` (+ optional ``segments``, ``text``, ``utt2spk``).

``wav.scp`` entries are file paths (relative ones are resolved against the
corpus directory ``base``) or piped commands ending in ``|`` (stored as Lhotse
``AudioSource(type="command")`` and run when the audio is loaded). Without
``segments`` each recording is one utterance; without ``utt2spk`` each
utterance is its own speaker (Kaldi's convention); without ``text`` the
utterances have no transcript and are skipped (reported).

>>> is_kaldi_data_dir(Path("/nonexistent"))
False
"""

from __future__ import annotations

from pathlib import Path

from ..report import SkipReport
from .common import Utterance, is_command


def is_kaldi_data_dir(path: Path) -> bool:
    return (Path(path) / "wav.scp").is_file() and (Path(path) / "text").is_file()


def read_table(path: Path) -> list[tuple[str, str]]:
    """``key rest-of-line`` pairs of a Kaldi text table, in file order (empty lines ignored)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(maxsplit=1)
            if parts:
                rows.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return rows


def _unique(rows: list[tuple[str, str]], what: str, report: SkipReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in rows:
        if key in out:
            report.skip(key, f"duplicate id in {what} (the first one is kept)")
            continue
        out[key] = value
    return out


def _resolve_audio(entry: str, base: Path) -> str:
    if is_command(entry):
        return entry
    p = Path(entry)
    return str(p if p.is_absolute() else base / p)


def read_kaldi_data_dir(data_dir: Path, base: Path | None = None,
                        report: SkipReport | None = None) -> list[Utterance]:
    """Utterances of one Kaldi data dir; relative audio paths are taken from ``base``
    (default: the data dir's parent, as a corpus' own ``wav.scp`` usually means)."""
    data_dir = Path(data_dir)
    base = Path(base) if base is not None else data_dir.parent
    report = report or SkipReport("prepare")
    wavs = _unique(read_table(data_dir / "wav.scp"), "wav.scp", report)
    texts = _unique(read_table(data_dir / "text"), "text", report) if (data_dir / "text").exists() else {}
    spk = dict(read_table(data_dir / "utt2spk")) if (data_dir / "utt2spk").exists() else {}
    utts = []
    if (data_dir / "segments").exists():
        for utt_id, rest in read_table(data_dir / "segments"):
            fields = rest.split()
            try:
                rec_id, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                report.skip(utt_id, f"malformed segments line: {rest!r}")
                continue
            if rec_id not in wavs:
                report.skip(utt_id, f"missing audio: recording {rec_id} not in wav.scp")
                continue
            end = None if end < 0 else end  # Kaldi: -1 means "to the end"
            utts.append(Utterance(utt_id, _resolve_audio(wavs[rec_id], base), texts.get(utt_id, ""),
                                  spk.get(utt_id, utt_id), recording_id=rec_id, start=start, end=end))
    else:
        for utt_id, entry in wavs.items():
            utts.append(Utterance(utt_id, _resolve_audio(entry, base), texts.get(utt_id, ""), spk.get(utt_id, utt_id)))
    listed = {u.id for u in utts}
    for utt_id in texts.keys() - listed:
        report.skip(utt_id, "missing audio: transcript without a wav.scp/segments entry")
    return utts


def find_data_dirs(src: Path) -> dict[str, Path]:
    """Split name → data dir: ``src`` itself if it is one (named by its directory),
    else every immediate subdirectory that is one."""
    src = Path(src)
    if is_kaldi_data_dir(src):
        return {src.name: src}
    return {p.name: p for p in sorted(src.iterdir()) if p.is_dir() and is_kaldi_data_dir(p)}
