"""The model a config describes, for training (:func:`build_model`) and for inference
(:func:`load_for_inference`).

Above every model module (:mod:`~weakalign.e2e.model`, :mod:`~weakalign.e2e.emnet`): the trainer,
the scorer and the benchmarks ask here, and no model module needs to know the others' names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .emnet import EMNetModel
from .model import E2EModel
from .tokenizer import Tokenizer


def build_model(config: dict, vocab_size: int, *, student_only: bool = False) -> E2EModel:
    """The model a config describes; ``emnet: true`` adds the EM-Network teacher unless ``student_only``."""
    if config.get("emnet") and not student_only:
        return EMNetModel(config, vocab_size)
    return E2EModel(config, vocab_size)


def load_for_inference(run_dir: str | Path, device="cpu"):
    """``(model, tokenizer, config)`` from ``run_dir/model_avg.pt`` and ``bpe.model``; model in eval mode."""
    run_dir = Path(run_dir)
    ckpt = torch.load(run_dir / "model_avg.pt", map_location="cpu", weights_only=False)
    model = build_model(ckpt["config"], ckpt["vocab_size"], student_only=True)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, Tokenizer(run_dir / "bpe.model"), ckpt["config"]
