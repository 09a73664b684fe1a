"""``weakalign publish``: copy a scored run's small text outputs to ``results/<corpus>/<run>/``.

``exp/`` holds checkpoints and is not committed; ``results/`` is: it keeps what every
table is computed from, so ``weakalign compare ... --from-results`` and
``weakalign results-table ... --from-results`` (``make results``) work from a clone
with no ``exp/``. Copied, with the run dir's relative layout (the ``hyp_trn``/``ref_trn``
paths of ``results.json`` are relative to the run dir and still resolve):

- ``results.json``, ``metrics.jsonl``, ``config.yaml``, ``training.json``, ``RESULTS.md``;
- for every ``decode_<mode>/<split>/``: ``hyp.trn``, ``ref.trn``, ``per_utt.txt``, ``result.wer.md``;
- ``loss_curves.png`` if smaller than 200 kB.

Nothing else -- never a checkpoint or any ``.pt`` file. Each file is written atomically;
``results.json`` last, so a published run dir with a ``results.json`` is complete. Files a
previous publication of the run left that are no longer part of it are removed.

>>> sorted(str(p) for p in published_names(["results.json", "model_avg.pt", "decode_beam/test/hyp.trn",
...                                         "decode_beam/test/decode.json", "checkpoints/epoch3.pt"]))
['decode_beam/test/hyp.trn', 'results.json']
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PurePosixPath

from weakalign.pipeline.io import atomic_path, read_json

from .compare import resolve_systems
from .scoring import split_results

log = logging.getLogger("weakalign")

RUN_FILES = ("results.json", "metrics.jsonl", "config.yaml", "training.json", "RESULTS.md")
SPLIT_FILES = ("hyp.trn", "ref.trn", "per_utt.txt", "result.wer.md")
PLOT_FILE = "loss_curves.png"
MAX_PLOT_BYTES = 200_000


def _is_published(rel: PurePosixPath) -> bool:
    parts = rel.parts
    if len(parts) == 1:
        return parts[0] in RUN_FILES or parts[0] == PLOT_FILE
    return len(parts) == 3 and parts[0].startswith("decode_") and parts[2] in SPLIT_FILES


def published_names(names) -> list[PurePosixPath]:
    """The relative paths among ``names`` that a publication copies (size limits aside)."""
    return [PurePosixPath(n) for n in names if _is_published(PurePosixPath(n))]


def files_to_publish(run_dir: Path) -> list[PurePosixPath]:
    """The files of ``run_dir`` to copy, relative to it; ``results.json`` last."""
    rels = []
    for path in sorted(run_dir.rglob("*")):
        rel = PurePosixPath(path.relative_to(run_dir).as_posix())
        if not path.is_file() or not _is_published(rel):
            continue
        if rel.name == PLOT_FILE and path.stat().st_size >= MAX_PLOT_BYTES:
            log.info("publish: %s is %d bytes (>= %d): not copied", path, path.stat().st_size, MAX_PLOT_BYTES)
            continue
        rels.append(rel)
    return sorted(rels, key=lambda r: (str(r) == "results.json", str(r)))


def check_result_paths(run_dir: Path, rels: list[PurePosixPath]) -> None:
    """Every trn file ``results.json`` names is relative to the run dir and among the copied files."""
    copied = {str(r) for r in rels}
    for split, r in split_results(read_json(run_dir / "results.json")).items():
        for key in ("hyp_trn", "ref_trn"):
            path = r.get(key)
            if path is None:
                continue
            if Path(path).is_absolute() or PurePosixPath(path).as_posix() not in copied:
                raise ValueError(f"{run_dir / 'results.json'}: {split}.{key} = {path!r} is not a file "
                                 f"published with the run (it must be decode_<mode>/<split>/{key[:3]}.trn, "
                                 "relative to the run dir); score the run again")


def publish_run(run_dir: Path, dest: Path) -> list[Path]:
    """Copy the published files of one scored run dir to ``dest``; returns the files written."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / "results.json").exists():
        raise FileNotFoundError(f"{run_dir / 'results.json'} not found: score the run first (weakalign score)")
    if run_dir.resolve() == dest.resolve():
        raise ValueError(f"{run_dir} is already the published copy")
    rels = files_to_publish(run_dir)
    check_result_paths(run_dir, rels)
    if not (run_dir / "training.json").exists():
        log.warning("publish: %s has no training.json (trained before the trainer wrote one): "
                    "compare will refuse it without --allow-mixed", run_dir.name)
    written = []
    for rel in rels:
        with atomic_path(dest / rel) as tmp:
            shutil.copyfile(run_dir / rel, tmp)
        written.append(dest / rel)
    # Remove what an earlier publication of this run left and this one does not have.
    keep = {str(r) for r in rels}
    for path in sorted(dest.rglob("*")) if dest.is_dir() else []:
        rel = PurePosixPath(path.relative_to(dest).as_posix())
        if path.is_file() and _is_published(rel) and str(rel) not in keep:
            log.info("publish: removing stale %s", path)
            path.unlink()
    return written


def publish(corpus: str, specs: list[str], *, exp_root: str | Path = "exp",
            results_root: str | Path = "results", prefix: str = "") -> dict[str, list[Path]]:
    """Publish the runs ``specs`` (names, globs or paths, as for compare) of ``exp/<c>/e2e``, each as
    ``results/<c>/<prefix><run>`` (a prefix keeps the runs of another alignment set apart from
    published runs of the same names)."""
    if "/" in prefix or prefix.startswith("."):
        raise ValueError(f"--prefix {prefix!r}: must be a plain name part (no '/', not starting with '.')")
    e2e_dir = Path(exp_root) / corpus / "e2e"
    out = Path(results_root) / corpus
    run_dirs: dict[str, Path] = {}
    for system in resolve_systems(e2e_dir, specs):
        for run_dir in system.run_dirs:
            run_dirs.setdefault(run_dir.name, run_dir)
    unscored = [d.name for d in run_dirs.values() if not (d / "results.json").exists()]
    if unscored:  # before copying anything
        raise FileNotFoundError(f"not scored (no results.json): {', '.join(unscored)}; run weakalign score first")
    published: dict[str, list[Path]] = {}
    for name, run_dir in run_dirs.items():
        dest = prefix + name
        published[dest] = publish_run(run_dir, out / dest)
        log.info("publish: %s -> %s (%d files)", run_dir, out / dest, len(published[dest]))
    return published
