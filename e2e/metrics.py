"""Training and validation statistics shared by the trainer and the models: running means of
stats, word/character errors of greedy-CTC output (:func:`weakalign.e2e.decode.greedy_ctc`), and the
run dir's ``metrics.jsonl``.

This module sits below :mod:`~weakalign.e2e.train`, :mod:`~weakalign.e2e.model` and
:mod:`~weakalign.e2e.emnet` (it imports none of them), so a model's ``validate`` and the
trainer's loop use the same helpers without importing each other.

>>> mean = StatsMean()
>>> mean.add({"loss": 2.0, "acc": None}, weight=1)
>>> mean.add({"loss": 5.0}, weight=2)
>>> mean.result()
{'loss': 4.0}
>>> errors = GreedyErrors()
>>> errors.add(["ab c", "de f"], ["ab x", "de f"])
>>> errors.rates()
{'wer': 25.0, 'cer': 12.5}
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from ..pipeline.io import atomic_open


def word_errors(refs: list[str], hyps: list[str]) -> tuple[int, int]:
    """(errors, reference words) by Levenshtein alignment (kaldialign)."""
    return _edit_errors([r.split() for r in refs], [h.split() for h in hyps])


def char_errors(refs: list[str], hyps: list[str]) -> tuple[int, int]:
    """(errors, reference characters), spaces counted as characters (ESPnet's CER)."""
    return _edit_errors([list(" ".join(r.split())) for r in refs], [list(" ".join(h.split())) for h in hyps])


def _edit_errors(refs: list[list[str]], hyps: list[list[str]]) -> tuple[int, int]:
    import kaldialign

    errors = total = 0
    for r, h in zip(refs, hyps):
        errors += kaldialign.edit_distance(r, h)["total"]
        total += len(r)
    return errors, total


class GreedyErrors:
    """Greedy-CTC word and character errors summed over dev batches."""

    def __init__(self):
        self.counts = [0, 0, 0, 0]

    def add(self, refs: list[str], hyps: list[str]) -> None:
        for i, n in enumerate(word_errors(refs, hyps) + char_errors(refs, hyps)):
            self.counts[i] += n

    def rates(self) -> dict:
        we, w, ce, c = self.counts
        return {"wer": 100.0 * we / max(w, 1), "cer": 100.0 * ce / max(c, 1)}


class StatsMean:
    """Running means of stats, each weighted by its batch's utterance count (``None`` values skipped)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, stats: dict, weight: float) -> None:
        for k, v in stats.items():
            if v is None:
                continue
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * weight
            self.weights[k] = self.weights.get(k, 0.0) + weight

    def reduce_distributed(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        keys = sorted(self.sums)
        t = torch.tensor([[self.sums[k], self.weights[k]] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        for k, (s, w) in zip(keys, t.tolist()):
            self.sums[k], self.weights[k] = s, w

    def result(self) -> dict:
        return {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


# ---------------------------------------------------------------- metrics.jsonl

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (one per epoch; ``[]`` when there is none).

    The trainer writes the file atomically, so a line that is not JSON means the file was
    damaged: a ``ValueError`` names the file and the line.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n} is not JSON ({e.msg})") from None
    return rows


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    with atomic_open(Path(run_dir) / METRICS_FILE, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
