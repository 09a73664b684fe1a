"""Epoch checkpoints of a run dir (``checkpoints/epoch-N.pt``) and their averaging.

Below the trainer and the models (imports neither), so code that reloads a run, e.g.
:func:`weakalign.e2e.emnet.load_teacher_student`, does not need the trainer. A checkpoint
holds ``epoch``, ``model`` (the full state dict, EM-Network teacher included), ``optimizer``,
``scheduler``, ``rng``, ``updates``, ``config`` and ``vocab_size``; what ``model_avg.pt``
keeps of the averaged ``model`` dicts is the model's business (``export_state_dict``).

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> for e, w in ((1, 1.0), (2, 3.0)):
...     save_checkpoint(checkpoint_dir(d) / f"epoch-{e}.pt", epoch=e, model={"w": torch.tensor([w]),
...                     "n": torch.tensor(e)})
>>> latest_checkpoint(d).name
'epoch-2.pt'
>>> avg = average_state_dicts(sorted(checkpoint_dir(d).glob("*.pt")))
>>> avg["w"].tolist(), avg["n"].item()
([2.0], 2)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..pipeline.io import atomic_torch_save


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir(run_dir).glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return found[-1] if found else None


def save_checkpoint(path: Path, **state) -> None:
    atomic_torch_save(state, path)


def average_state_dicts(paths: list[Path]) -> dict:
    """Element-wise mean of the ``model`` state dicts in ``paths`` (integer buffers from the last)."""
    avg = None
    for p in paths:
        sd = torch.load(p, map_location="cpu", weights_only=False)["model"]
        if avg is None:
            avg = {k: v.clone().double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
        else:
            for k, v in sd.items():
                avg[k] = avg[k] + v.double() if v.is_floating_point() else v.clone()
    return {k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in avg.items()}
