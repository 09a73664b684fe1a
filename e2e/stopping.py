"""Model selection and early stopping on a dev criterion that holds no auxiliary loss.

Every system of a comparison is stopped and selected by the same rule, so the
rule is part of a run's identity (``training.json`` records it and ``compare``
checks it). The criterion is read from the dev stats of an epoch:

- ``cer`` / ``wer``: greedy-CTC character / word error rate of the main CTC head (%);
- ``acc``: teacher-forced attention-decoder token accuracy (higher is better);
- ``loss_main``: the CTC and attention terms of the loss with the config's ctc_weight,
  never the auxiliary or EM-Network teacher terms.

Values are turned into "lower is better" scores, so one comparison serves all four.

>>> rule = StoppingRule(criterion="cer", patience=2, min_epochs=1, max_epochs=10)
>>> rows = [{"epoch": e, "dev": {"cer": c}} for e, c in enumerate([50.0, 30.0, 31.0, 32.0], 1)]
>>> rule.should_stop(rows), rule.best_epochs(rows, keep=2)
(True, [2, 3])
>>> score({"acc": 0.9}, "acc")
-0.9
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CRITERIA = ("cer", "wer", "acc", "loss_main")


def score(dev_stats: dict, criterion: str, ctc_weight: float = 0.3) -> float:
    """The criterion of one epoch's dev stats as a lower-is-better number."""
    if criterion not in CRITERIA:
        raise ValueError(f"selection criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "acc":
        if dev_stats.get("acc") is None:
            raise ValueError("criterion 'acc' needs an attention decoder (ctc_weight < 1)")
        return -float(dev_stats["acc"])
    if criterion == "loss_main":
        att = dev_stats.get("loss_att")
        ctc = float(dev_stats["loss_ctc"])
        return ctc if att is None else ctc_weight * ctc + (1.0 - ctc_weight) * float(att)
    return float(dev_stats[criterion])


@dataclass(frozen=True)
class StoppingRule:
    """Stop after ``patience`` epochs without a better dev score (not before ``min_epochs``),
    or at ``max_epochs``; the ``keep`` best epochs by the same score are averaged."""

    criterion: str = "cer"
    patience: int = 8
    min_epochs: int = 1
    max_epochs: int = 80
    ctc_weight: float = 0.3

    @classmethod
    def from_config(cls, config: dict) -> "StoppingRule":
        return cls(criterion=str(config.get("select_by", "cer")), patience=int(config.get("patience", 8)),
                   min_epochs=int(config.get("min_epochs", 1)), max_epochs=int(config["epochs"]),
                   ctc_weight=float(config.get("ctc_weight", 0.3)))

    def identity(self) -> dict:
        """What makes two runs' stopping comparable (the ctc_weight only shapes ``loss_main``)."""
        d = asdict(self)
        d.pop("ctc_weight")
        return {"rule": "early_stopping", **d}

    def scores(self, rows: list[dict]) -> list[tuple[float, int]]:
        return [(score(r["dev"], self.criterion, self.ctc_weight), int(r["epoch"])) for r in rows]

    def epochs_since_best(self, rows: list[dict]) -> int:
        scores = self.scores(rows)
        if not scores:
            return 0
        best_epoch = min(scores)[1]
        return int(rows[-1]["epoch"]) - best_epoch

    def should_stop(self, rows: list[dict]) -> bool:
        if not rows:
            return False
        last = int(rows[-1]["epoch"])
        if last >= self.max_epochs:
            return True
        return last >= self.min_epochs and self.epochs_since_best(rows) >= self.patience

    def best_epochs(self, rows: list[dict], keep: int) -> list[int]:
        """The ``keep`` best epochs (ties: the earlier), in epoch order."""
        return sorted(e for _, e in sorted(self.scores(rows))[:keep])
