"""Where a corpus' files live: ``data/<corpus>`` and ``exp/<corpus>``.

Stages talk only through files under these two directories, as Kaldi and
icefall recipes do. See ``docs/LAYOUT.md`` for every file a stage writes.

>>> ws = Workspace("an4", data_root="data", exp_root="exp")
>>> str(ws.manifest("recordings", "train"))
'data/an4/manifests/an4_recordings_train.jsonl.gz'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Workspace:
    corpus: str
    data_root: Path | str = Path("data")
    exp_root: Path | str = Path("exp")

    @property
    def data(self) -> Path:
        return Path(self.data_root) / self.corpus

    @property
    def exp(self) -> Path:
        return Path(self.exp_root) / self.corpus

    @property
    def log_dir(self) -> Path:
        return self.exp / "log"

    @property
    def done_dir(self) -> Path:
        return self.exp / "done"

    def manifest(self, kind: str, split: str) -> Path:
        """``kind`` is ``recordings`` or ``supervisions``."""
        return self.data / "manifests" / f"{self.corpus}_{kind}_{split}.jsonl.gz"

    def mfcc_cuts(self, split: str) -> Path:
        return self.data / "mfcc" / f"{self.corpus}_cuts_{split}.jsonl.gz"

    def cmvn(self, split: str) -> Path:
        """Per-speaker CMVN statistics of the MFCCs, a Kaldi archive (speaker -> 2 x (D+1))."""
        return self.data / "mfcc" / f"cmvn_{split}.ark"

    def fbank_cuts(self, split: str) -> Path:
        return self.data / "fbank" / f"{self.corpus}_cuts_{split}.jsonl.gz"

    @property
    def fbank_stats(self) -> Path:
        """Global mean/std of the train fbank: JSON ``{"mean": [...], "std": [...], "frames": n}``."""
        return self.data / "fbank" / "global_cmvn.json"

    @property
    def lang(self) -> Path:
        return self.data / "lang"

    def ali_cuts(self, split: str) -> Path:
        return self.data / f"cuts_{split}_ali.jsonl.gz"

    def available_splits(self) -> list[str]:
        """Splits with a prepared supervision manifest, in the order train, dev, test, others."""
        found = sorted(p.name[len(self.corpus) + len("_supervisions_"):-len(".jsonl.gz")]
                       for p in (self.data / "manifests").glob(f"{self.corpus}_supervisions_*.jsonl.gz"))
        return [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]
