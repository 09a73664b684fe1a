"""Learning-rate schedules of the E2E trainer; both step per update and are resumable.

- ``noam``: linear warm-up to the peak ``lr`` over ``warmup_steps``, then ``sqrt(warmup/step)``.
- ``plateau``: linear warm-up, then constant; after ``lr_patience`` epochs in which the dev
  score ``lr_criterion`` (default ``loss_main``, see :mod:`weakalign.e2e.stopping`) did not beat
  its best, the lr is multiplied by ``lr_decay`` (ESPnet's RNN recipes halve
  Adadelta's eps the same way, Kaldi's nnet1 halves its lr). ``lr_min`` bounds it below.

>>> s = PlateauSchedule(warmup_steps=2, patience=1, decay=0.5)
>>> [round(s.factor(step), 2) for step in range(3)]
[0.5, 1.0, 1.0]
>>> s.end_epoch(improved=True); s.end_epoch(improved=False); s.scale
0.5
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("noam", "plateau")


def warmup_inverse_sqrt(warmup_steps: int):
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then ``sqrt(warmup / step)`` (Noam's shape)."""
    warmup = max(int(warmup_steps), 1)

    def factor(step: int) -> float:
        step = step + 1
        return min(step / warmup, math.sqrt(warmup / step))

    return factor


class PlateauSchedule:
    """Warm-up factor times a scale that shrinks when the dev score stalls."""

    def __init__(self, warmup_steps: int, patience: int = 1, decay: float = 0.5, min_scale: float = 0.0):
        self.warmup = max(int(warmup_steps), 1)
        self.patience = int(patience)
        self.decay = float(decay)
        self.min_scale = float(min_scale)
        self.scale = 1.0
        self.bad_epochs = 0

    def factor(self, step: int) -> float:
        return min((step + 1) / self.warmup, 1.0) * self.scale

    def end_epoch(self, improved: bool) -> None:
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:
            self.scale = max(self.scale * self.decay, self.min_scale)
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.bad_epochs = float(state["scale"]), int(state["bad_epochs"])


class Scheduler:
    """A ``LambdaLR`` stepped per update, plus the per-epoch hook of the plateau schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: dict):
        kind = str(config.get("lr_schedule", "noam"))
        if kind not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {kind!r}")
        self.plateau = None
        if kind == "plateau":
            lr = float(config["lr"])
            self.plateau = PlateauSchedule(config["warmup_steps"], int(config.get("lr_patience", 1)),
                                           float(config.get("lr_decay", 0.5)),
                                           float(config.get("lr_min", 0.0)) / lr if lr > 0 else 0.0)
            factor = self.plateau.factor
        else:
            factor = warmup_inverse_sqrt(config["warmup_steps"])
        self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def step(self) -> None:
        self.lambda_lr.step()

    def end_epoch(self, improved: bool) -> None:
        if self.plateau is not None:
            self.plateau.end_epoch(improved)
            # Apply the new scale now rather than at the next update.
            for group, base in zip(self.lambda_lr.optimizer.param_groups, self.lambda_lr.base_lrs):
                group["lr"] = base * self.plateau.factor(self.lambda_lr.last_epoch)

    def state_dict(self) -> dict:
        state = {"lambda_lr": self.lambda_lr.state_dict()}
        if self.plateau is not None:
            state["plateau"] = self.plateau.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.lambda_lr.load_state_dict(state["lambda_lr"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
