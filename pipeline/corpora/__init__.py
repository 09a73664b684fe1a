"""The ``prepare`` stage: a corpus → Lhotse manifests per split.

Writes ``data/<c>/manifests/<c>_{recordings,supervisions}_<split>.jsonl.gz``
(validated ``RecordingSet`` + ``SupervisionSet``). Recipes:

- ``an4``: CMU AN4 (Sphinx transcriptions); ``train`` minus a speaker-disjoint,
  seeded ``dev`` of ~100 utterances, and ``test``.
- ``speechocean762``: every Kaldi data dir under ``--src`` is a split (the shared copy
  has ``train``; point ``--src`` at the test half to add ``test``; only the splits
  found are written). ``dev`` is carved from ``train``: 10% of the speakers,
  stratified child/adult by ``spk2age``.
- ``kaldi``: any Kaldi data dir (``--src`` is one data dir, named by its directory, or
  a directory of them); ``wav.scp`` paths or piped commands; optional ``segments``,
  ``utt2spk``. Relative audio paths are resolved against ``--audio-root`` (default:
  the parent of each data dir).
- ``tedlium2``: the TED-LIUM 2 release layout (``<split>/sph/*.sph`` + ``<split>/stm/*.stm``).

For the Kaldi-style recipes a missing ``dev`` is carved from ``train`` by speaker,
before any check drops an utterance, and only from the speakers the corpus lists: a bad
line or an utterance missing from ``utt2spk`` does not change which speakers make dev.
``max_utts_per_split``/``utts_per_speaker`` take a small, deterministic,
speaker-spread slice of each split (after the dev split is made, so slices keep
the full run's speaker-disjoint dev) — what the tests use.

>>> parse_split_limits("train=60,dev=12")
{'train': 60, 'dev': 12}
>>> parse_split_limits("50"), parse_split_limits("all")
(50, None)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from ..io import atomic_path
from ..report import SkipReport
from ..workspace import Workspace
from .an4 import read_an4
from .common import Utterance, build_manifests, speaker_disjoint_dev, subset_utterances
from .kaldi_dir import find_data_dirs, read_kaldi_data_dir, read_table
from .tedlium import find_tedlium_dirs, read_tedlium_dir

log = logging.getLogger("weakalign")

DEV_SPEAKER_FRACTION = 0.1
CHILD_MAX_AGE = 15


def repo_root() -> Path:
    """The directory holding ``pyproject.toml`` (found from this package), else the cwd."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def default_source(corpus: str) -> Path:
    """``$WEAKALIGN_CORPORA/<corpus>`` if set, else ``<repo>/../shared/corpora/<corpus>``."""
    root = os.environ.get("WEAKALIGN_CORPORA")
    if root:
        return Path(root) / corpus
    return repo_root().parent / "shared" / "corpora" / corpus


def parse_split_limits(value: str | int | dict | None) -> int | dict[str, int] | None:
    """``"60"`` → 60 (every split); ``"train=60,dev=12"`` → per split (others unlimited);
    ``"all"`` → None (whole splits: how a command line undoes a recorded slice)."""
    if value is None or isinstance(value, (int, dict)):
        return value
    value = str(value).strip()
    if value.lower() in ("all", "none"):
        return None
    if "=" not in value:
        return int(value)
    limits = {}
    for part in value.split(","):
        split, n = part.split("=")
        limits[split.strip()] = int(n)
    return limits


def _carve_dev(splits: dict[str, list[Utterance]], seed: int,
               stratum: Callable[[str], str] | None = None) -> dict[str, list[Utterance]]:
    if "train" not in splits or "dev" in splits:
        return splits
    if len({u.speaker for u in splits["train"] if u.listed_speaker}) < 2:
        log.warning("train has fewer than 2 speakers: no dev split carved")
        return splits
    train, dev = speaker_disjoint_dev(splits["train"], seed=seed, speaker_fraction=DEV_SPEAKER_FRACTION,
                                      stratum=stratum)
    return {**splits, "train": train, "dev": dev}


def read_speechocean762(src: Path, report: SkipReport, seed: int = 0, audio_root: Path | None = None):
    dirs = find_data_dirs(src)
    splits = {name: read_kaldi_data_dir(d, base=audio_root or src, report=report) for name, d in dirs.items()}
    ages: dict[str, int] = {}
    for d in dirs.values():
        if (d / "spk2age").exists():
            ages.update({spk: int(age) for spk, age in read_table(d / "spk2age", report).values.items()
                         if age.strip().isdigit()})
    stratum = (lambda spk: "child" if ages.get(spk, 99) <= CHILD_MAX_AGE else "adult") if ages else None
    return _carve_dev(splits, seed, stratum)


def read_kaldi(src: Path, report: SkipReport, seed: int = 0, audio_root: Path | None = None):
    dirs = find_data_dirs(src)
    splits = {name: read_kaldi_data_dir(d, base=audio_root, report=report) for name, d in dirs.items()}
    return _carve_dev(splits, seed)


def read_tedlium2(src: Path, report: SkipReport, seed: int = 0, audio_root: Path | None = None):
    splits = {name: read_tedlium_dir(d, report) for name, d in find_tedlium_dirs(src).items()}
    return _carve_dev(splits, seed)


def read_an4_recipe(src: Path, report: SkipReport, seed: int = 0, audio_root: Path | None = None):
    return read_an4(src, report, seed=seed)


RECIPES: dict[str, Callable[..., dict[str, list[Utterance]]]] = {
    "an4": read_an4_recipe,
    "speechocean762": read_speechocean762,
    "kaldi": read_kaldi,
    "tedlium2": read_tedlium2,
}


def guess_recipe(corpus: str, src: Path) -> str:
    if corpus in RECIPES:
        return corpus
    if corpus.startswith("tedlium"):
        return "tedlium2"
    if find_data_dirs(src):
        return "kaldi"
    if find_tedlium_dirs(src):
        return "tedlium2"
    raise ValueError(f"no recipe for corpus {corpus!r} and {src} holds neither Kaldi data dirs nor "
                     f"the TED-LIUM layout; give --recipe ({', '.join(RECIPES)})")


def resolve_recipe(corpus: str, src: Path, recipe: str | None = None) -> str:
    """``recipe``, or the one :func:`guess_recipe` finds for ``src``; an unknown name is an error."""
    recipe = recipe or guess_recipe(corpus, src)
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    return recipe


def prepare(ws: Workspace, *, src: str | os.PathLike | None = None, recipe: str | None = None,
            max_utts_per_split: int | dict[str, int] | str | None = None,
            utts_per_speaker: int | None = None, seed: int = 0,
            audio_root: str | os.PathLike | None = None) -> dict:
    """Stage ``prepare``: read the corpus with its recipe, check it, write the manifests.

    Returns the stage summary: counts per split, skipped items, outputs.
    """
    src = Path(src) if src else default_source(ws.corpus)
    if not src.is_dir():
        raise FileNotFoundError(f"corpus source {src} is not a directory (give --src or set WEAKALIGN_CORPORA)")
    recipe = resolve_recipe(ws.corpus, src, recipe)
    limits = parse_split_limits(max_utts_per_split)
    report = SkipReport("prepare")
    log.info("prepare %s: recipe %s, source %s", ws.corpus, recipe, src)
    splits = RECIPES[recipe](src, report, seed=seed, audio_root=Path(audio_root) if audio_root else None)
    if not splits:
        raise ValueError(f"recipe {recipe} found no split under {src}")

    summary_splits, outputs, unlisted = {}, [], {}
    for split, utts in splits.items():
        limit = limits.get(split) if isinstance(limits, dict) else limits
        utts = subset_utterances(utts, limit, utts_per_speaker or None, seed=seed)  # 0: no limit
        written = write_split_manifests(ws, split, utts, report)
        if written is None:
            continue
        summary_splits[split], paths, unlisted[split] = written
        outputs += paths
    report.log_summary()
    return {"recipe": recipe, "src": str(src), "splits": summary_splits,
            "speaker_not_in_utt2spk": {split: ids for split, ids in unlisted.items() if ids},
            **report.summary(), "outputs": outputs}


def write_split_manifests(ws: Workspace, split: str, utts: list, report: SkipReport):
    """Write ``split``'s recordings and supervisions manifests from ``utts``; returns its counts, the
    paths written and the utterances whose speaker ``utt2spk`` does not list (``None``: no usable
    utterance, nothing written)."""
    recs, sups = build_manifests(utts, report)
    if len(sups) == 0:
        log.warning("prepare %s: split %s has no usable utterance; not written", ws.corpus, split)
        return None
    paths = []
    for kind, manifest in (("recordings", recs), ("supervisions", sups)):
        path = ws.manifest(kind, split)
        with atomic_path(path) as tmp:
            manifest.to_file(tmp)
        paths.append(path)
    hours = sum(s.duration for s in sups) / 3600
    counts = {"utterances": len(sups), "recordings": len(recs), "speakers": len({s.speaker for s in sups}),
              "hours": round(hours, 4)}
    log.info("prepare %s: %s: %d utterances, %d speakers, %.2f h", ws.corpus, split, len(sups),
             counts["speakers"], hours)
    return counts, paths, [u.id for u in utts if not u.listed_speaker and u.id in sups]
