"""A Kaldi data dir's own features as the GMM jobs' input (``feats.scp`` + ``cmvn.scp``).

To tell feature effects from training effects, the GMM stages can train on the very matrices
real Kaldi trained on (``kaldi_an4_reference/feats/train``):
:func:`~weakalign.kaldi_steps.shard.kaldi_shard_args` gives the
:class:`~weakalign.kaldi_steps.shard.Shard` arguments of a data dir, whose utterances are read by
:func:`read_data_dir` (``text``, ``utt2spk``, and MFCCs with the speaker's CMVN applied, as
``apply-cmvn --utt2spk`` does). Paths inside the scp files are taken relative to ``root``
(the fixture's are relative to the fixture root, not to the data dir).

>>> from pathlib import Path
>>> d = Path("/work/shared/fixtures/kaldi_an4_reference/feats/dev")
>>> utts = read_data_dir(d, root=d.parent.parent)
>>> utt = utts["flmm2-an61-flmm2-b"]
>>> utt.speaker, utt.text, utt.mfcc().shape
('flmm2', 'ENTER SEVEN OH THREE EIGHT', (260, 13))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _read_table(path: Path) -> dict[str, str]:
    """``key rest-of-line`` of a Kaldi table file, read as ``prepare`` reads a corpus' (a repeated
    key's later lines are ignored, and said so)."""
    from weakalign.pipeline.corpora.kaldi_dir import read_table
    from weakalign.pipeline.report import SkipReport

    return read_table(path, SkipReport("kaldi data dir")).values


def _resolve(entry: str, root: Path) -> str:
    """An scp entry ``ark:offset`` with a relative ark path made absolute under ``root``."""
    path, sep, offset = entry.rpartition(":")
    if not sep or not offset.isdigit():
        raise ValueError(f"scp entry {entry!r} is not 'path:offset' (pipes are not read here)")
    return f"{path if os.path.isabs(path) else root / path}:{offset}"


@dataclass
class KaldiUtterance:
    utt_id: str
    speaker: str
    text: str
    feats_entry: str
    cmvn_entry: str

    def mfcc(self) -> np.ndarray:
        """The utterance's MFCCs with its speaker's CMVN applied (``apply-cmvn``: means only)."""
        import kaldiio

        from weakalign.pipeline.acoustic_features import apply_cmvn

        return apply_cmvn(kaldiio.load_mat(self.feats_entry), kaldiio.load_mat(self.cmvn_entry))


def read_data_dir(data_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, KaldiUtterance]:
    """Every utterance of a Kaldi data dir with features (``feats.scp``, ``cmvn.scp``, ``utt2spk``,
    ``text``); scp paths relative to ``root`` (default: the current directory, as Kaldi reads them).
    An utterance without a transcript or without its speaker's CMVN is an error naming it."""
    d = Path(data_dir)
    root = Path(root) if root is not None else Path.cwd()
    feats, cmvn = _read_table(d / "feats.scp"), _read_table(d / "cmvn.scp")
    utt2spk, text = _read_table(d / "utt2spk"), _read_table(d / "text")
    utts = {}
    for utt, entry in feats.items():
        spk = utt2spk.get(utt)
        if spk is None or spk not in cmvn:
            raise ValueError(f"{utt}: no speaker in {d / 'utt2spk'} or no CMVN for it in {d / 'cmvn.scp'}")
        if utt not in text:
            raise ValueError(f"{utt}: no transcript in {d / 'text'}")
        utts[utt] = KaldiUtterance(utt, spk, text[utt], _resolve(entry, root), _resolve(cmvn[spk], root))
    return utts


@dataclass(frozen=True)
class KaldiSource:
    """Where a :class:`~weakalign.kaldi_steps.shard.Shard` reads a Kaldi data dir's features from
    (in place of the pipeline's cuts and CMVN archive)."""

    data_dir: str
    root: str | None = None

    def utterances(self, wanted: set[str]):
        """``(utt_id, speaker, text, load_mfcc)`` for the ``wanted`` utterances, in data-dir order."""
        for utt in read_data_dir(self.data_dir, self.root).values():
            if utt.utt_id in wanted:
                yield utt.utt_id, utt.speaker, utt.text, utt.mfcc
