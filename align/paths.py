"""File paths inside exported cuts: written relative to a directory, and re-rooted when loaded.

``weakalign export`` writes absolute paths by default (the features stage does too), so the
cuts load from any working directory on the machine that made them. For a tree that moves
(another machine, a container), ``weakalign export --relative-to DIR`` writes every path of the
cuts (audio files, fbank storage, the ``senone``/``phone`` arrays) relative to ``DIR``; load them
with :func:`rebase_cuts` and wherever ``DIR`` is now, as lhotse's ``with_features_path_prefix``
and ``with_recording_path_prefix`` do for features and audio. Needs only lhotse.

>>> from lhotse.testing.dummies import dummy_cut
>>> cut = rebase_cut(dummy_cut(0), "/corpora")      # its fbank storage path is relative
>>> cut.features.storage_path
'/corpora/test/fixtures/dummy_feats/storage'
>>> relative_cut(cut, "/corpora/test").features.storage_path
'fixtures/dummy_feats/storage'
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

from lhotse import CutSet
from lhotse.array import Array, TemporalArray
from lhotse.cut.data import DataCut


def map_storage_paths(cut, fn: Callable[[str], str]):
    """A copy of ``cut`` with ``fn`` applied to each file path it loads from: audio sources of type
    ``file``, the features' and every custom array's ``storage_path`` (in-memory ones have none)."""
    if not isinstance(cut, DataCut):  # a MixedCut's paths live in its tracks
        raise TypeError(f"{cut.id}: expected a MonoCut as the export writes, got a {type(cut).__name__}")
    if cut.has_recording:
        sources = [dataclasses.replace(s, source=fn(s.source)) if s.type == "file" else s
                   for s in cut.recording.sources]
        cut = dataclasses.replace(cut, recording=dataclasses.replace(cut.recording, sources=sources))
    if cut.has_features and _on_disk(cut.features):
        cut = dataclasses.replace(cut, features=dataclasses.replace(cut.features,
                                                                    storage_path=fn(cut.features.storage_path)))
    for name, value in (cut.custom or {}).items():
        array = value.array if isinstance(value, TemporalArray) else value
        if isinstance(array, Array) and _on_disk(array):
            moved = dataclasses.replace(array, storage_path=fn(array.storage_path))
            cut = cut.with_custom(name, dataclasses.replace(value, array=moved) if value is not array else moved)
    return cut


def _on_disk(manifest) -> bool:
    """Whether a features/array manifest names a file or directory (lhotse's in-memory ones hold their data)."""
    return bool(manifest.storage_path) and not manifest.storage_type.startswith("memory")


def relative_cut(cut, root: str | os.PathLike):
    """``cut`` with every file path relative to ``root`` (absolute or relative to the working dir)."""
    root = os.path.abspath(root)
    return map_storage_paths(cut, lambda p: os.path.relpath(os.path.abspath(p), root))


def rebase_cut(cut, root: str | os.PathLike):
    """``cut`` with ``root`` put before every relative file path (absolute ones stay as they are)."""
    return map_storage_paths(cut, lambda p: os.path.join(root, p))


def rebase_cuts(cuts: CutSet, root: str | os.PathLike) -> CutSet:
    """:func:`rebase_cut` on every cut: the cuts of ``weakalign export --relative-to DIR`` with
    ``root`` = where ``DIR`` is now, e.g. ``rebase_cuts(CutSet.from_file(path), "/mnt/data")``."""
    return cuts.map(functools.partial(rebase_cut, root=root))  # a partial pickles, for DataLoader workers
