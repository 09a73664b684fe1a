"""``weakalign compare``: one table of several scored runs on one set, with significance.

Each system is a run dir (``exp/<c>/e2e/<run>``, given as a path, a run name or a
glob such as ``aux_ls0.5_l3_seed*``) or a *group* of run dirs: a glob matching
several runs, or, with ``group_seeds=True``, runs whose names differ only in a
``_seed<n>`` suffix. For a group the WER is given as mean ± std over its runs
(``n`` runs), and its per-utterance errors are the mean over the runs (the
"average system") for the interval and the bootstrap test.

Runs are looked up under ``exp/<c>/e2e/`` or, ``from_results`` (``--from-results``),
under the published copies in ``results/<c>/`` (``weakalign publish``): every table
can be recomputed from ``results/`` alone.

Columns: ``n`` (runs), WER, bootstrap 95% CI, relative change vs the first system, and
two two-sided p-values vs the first system, both paired over the same utterances:

- ``p``: paired bootstrap over utterances (Bisani & Ney 2004; Koehn 2004) on the
  per-utterance errors *averaged over each group's runs*;
- ``p_perm``: paired permutation (sign-flip) test on per-utterance error differences
  *pooled over seed pairs*: when both systems have the same seeds, run ``seedK`` of one
  is paired with run ``seedK`` of the other and every (utterance, seed pair) is a unit;
  when the seed sets differ, on the seed-averaged per-utterance differences.

Fairness: before comparing, every run's training record (``"training"`` of its
``results.json``, else its ``training.json``) is read. Runs trained on different cuts
(``ali`` vs ``fbank``; ``cut_list_digest``, where both record it), with different stopping
rules, or with checkpoints selected by different criteria are not compared -- nor runs
without a record -- and neither are runs *whose loss reads the alignments* trained on
different alignment sets (``alignment_digest``). A run whose loss does not read them (the
baseline, BPE inter-CTC, EM-Network without an aux term; :func:`run_reads_alignments`)
trains on the same bytes whatever alignment set its cuts carry, so it is compared with
the runs of any set. ``allow_mixed`` (``--allow-mixed``) turns a refusal into a warning
above the table. A system of fewer than 3 runs is compared with a warning.

>>> seed_group_name("aux_ls0.5_l3_seed2")
'aux_ls0.5_l3'
>>> describe_value("alignment set", "3f2a9c0d11aa22bb")
'3f2a9c0d…'
>>> describe_value("stopping rule", {"rule": "early_stopping", "patience": 8})
'rule=early_stopping, patience=8'
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from weakalign.pipeline.io import atomic_open, read_json

from .config import reads_alignments
from .scoring import read_trn, score_set, split_results
from .significance import bootstrap_ci, paired_bootstrap_test, paired_permutation_test

log = logging.getLogger("weakalign")

SEED_SUFFIX = re.compile(r"_seed(\d+)$")
MIN_SEEDS = 3
TRAINING_FILE = "training.json"


def seed_group_name(run: str) -> str:
    return SEED_SUFFIX.sub("", run)


def runs_root(corpus: str, *, exp_root: str | Path = "exp", results_root: str | Path = "results",
              from_results: bool = False) -> Path:
    """Where the run dirs of ``corpus`` are: ``exp/<c>/e2e`` or, published, ``results/<c>``.

    >>> str(runs_root("an4")), str(runs_root("an4", from_results=True))
    ('exp/an4/e2e', 'results/an4')
    """
    return Path(results_root) / corpus if from_results else Path(exp_root) / corpus / "e2e"


def scored_runs(root: Path) -> list[str]:
    """Names of the run dirs under ``root`` that hold a ``results.json``, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "results.json").exists())


@dataclass
class System:
    name: str
    run_dirs: list[Path] = field(default_factory=list)

    @property
    def is_group(self) -> bool:
        return len(self.run_dirs) > 1


def resolve_systems(e2e_dir: Path, specs: list[str], group_seeds: bool = False) -> list[System]:
    """Run dirs or groups of them, in the order given."""
    systems: list[System] = []
    available = sorted(p.name for p in e2e_dir.iterdir() if p.is_dir()) if e2e_dir.is_dir() else []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and (path / "results.json").exists():
            systems.append(System(path.name, [path]))
            continue
        matches = [n for n in available if fnmatch.fnmatchcase(n, spec)]
        if not matches:
            raise FileNotFoundError(f"no run matches {spec!r} under {e2e_dir} (runs: {', '.join(available) or 'none'})")
        if len(matches) > 1:
            systems.append(System(spec, [e2e_dir / n for n in matches]))
        else:
            systems.append(System(matches[0], [e2e_dir / matches[0]]))
    if group_seeds:
        merged: dict[str, System] = {}
        for s in systems:
            key = s.name if s.is_group else seed_group_name(s.name)
            target = merged.setdefault(key, System(key))
            target.run_dirs.extend(d for d in s.run_dirs if d not in target.run_dirs)
        systems = list(merged.values())
    return systems


# ---------------------------------------------------------------- what a run trained on

def training_record(run_dir: Path) -> dict | None:
    """The run's training record: ``"training"`` of its results.json, else its training.json, else None."""
    results_path = Path(run_dir) / "results.json"
    if results_path.exists():
        training = read_json(results_path).get("training")
        if isinstance(training, dict):
            return training
    path = Path(run_dir) / TRAINING_FILE
    return read_json(path) if path.exists() else None


def run_seed(run_dir: Path, record: dict | None = None) -> int | None:
    """The seed of a run: its ``_seed<n>`` suffix, else its training record's, else None."""
    m = SEED_SUFFIX.search(Path(run_dir).name)
    if m:
        return int(m.group(1))
    record = training_record(run_dir) if record is None else record
    return record.get("seed") if record else None


def run_reads_alignments(run_dir: Path, record: dict) -> bool:
    """Whether the run's loss read its cuts' alignments: the record's ``reads_alignments``; for a
    record written before it was kept, the run's ``config.yaml`` (its ``aux``); when neither says,
    True (the strict check)."""
    if "reads_alignments" in record:
        return bool(record["reads_alignments"])
    config_path = Path(run_dir) / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    if isinstance(config, dict) and "aux" in config:
        return reads_alignments(config)
    return True


# What must agree across compared runs: (name in messages, value from a training record, which runs
# it binds: every run, or those whose loss reads the alignments, or those that record the value).
FAIRNESS_KEYS = (
    ("cuts", lambda r: r.get("cuts"), "all"),
    ("cut list", lambda r: r.get("cut_list_digest"), "recorded"),
    ("alignment set", lambda r: r.get("alignment_digest"), "reads_alignments"),
    ("stopping rule", lambda r: r.get("stopping"), "all"),
    ("checkpoint-selection criterion", lambda r: (r.get("selection") or {}).get("criterion"), "all"),
)
MISMATCH = {"cuts": "runs trained on different cuts",
            "cut list": "runs trained on different cut lists",
            "alignment set": "runs whose loss reads the alignments trained on different alignment sets",
            "stopping rule": "runs trained with different stopping rules",
            "checkpoint-selection criterion": "runs whose checkpoints were selected by different criteria"}


def describe_value(what: str, value) -> str:
    """A training-record value as the error message shows it."""
    if what in ("alignment set", "cut list"):
        return f"{value[:8]}…" if value else "none recorded"
    if what == "cuts":
        return f"{value or 'unknown'} cuts"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "none" if value is None else str(value)


def _key(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class MixedRunsError(ValueError):
    """The runs of a comparison were not trained under the same conditions."""


def fairness_problems(systems: list[System]) -> list[str]:
    """Why the runs of ``systems`` are not comparable (empty when they are)."""
    runs = [d for s in systems for d in s.run_dirs]
    records = {d: training_record(d) for d in runs}
    problems = []
    missing = [d.name for d, r in records.items() if r is None]
    if missing:
        problems.append(f"runs without a training record (no training.json, no \"training\" in results.json): "
                        f"{', '.join(missing)}; what they trained on and how they stopped is unknown")
    known = {d: r for d, r in records.items() if r is not None}
    for what, get, binds in FAIRNESS_KEYS:
        values = {d: get(r) for d, r in known.items()
                  if binds != "reads_alignments" or run_reads_alignments(d, r)}
        if binds == "recorded":
            values = {d: v for d, v in values.items() if v is not None}
        by_value: dict[str, list[Path]] = {}
        for d, v in values.items():
            by_value.setdefault(_key(v), []).append(d)
        if len(by_value) > 1:  # runs sharing a value named together: "a, b (3f2a…) vs c (9c0d…)"
            problems.append(f"{MISMATCH[what]}: " + " vs ".join(
                f"{', '.join(d.name for d in ds)} ({describe_value(what, values[ds[0]])})" for ds in by_value.values()))
    return problems


def check_comparable(systems: list[System], allow_mixed: bool = False) -> list[str]:
    """Refuse (:class:`MixedRunsError`) runs trained under different conditions unless ``allow_mixed``.

    Returns the warnings to print above the table: the mismatches let through by ``allow_mixed``,
    and systems of fewer than 3 runs.
    """
    problems = fairness_problems(systems)
    if problems and not allow_mixed:
        raise MixedRunsError("; ".join(problems) + "; pass --allow-mixed to compare anyway")
    warnings = [f"compared anyway (--allow-mixed): {p}" for p in problems]
    small = [f"{s.name} (n={len(s.run_dirs)})" for s in systems if len(s.run_dirs) < MIN_SEEDS]
    if small:
        warnings.append(f"fewer than {MIN_SEEDS} runs (seeds): {', '.join(small)}; "
                        "a difference between single runs can be seed noise")
    for w in warnings:
        log.warning("compare: %s", w)
    return warnings


# ---------------------------------------------------------------- scoring the runs

def run_errors(run_dir: Path, split: str) -> tuple[dict[str, int], dict[str, int], float]:
    """Per-utterance word errors and reference words of a scored run, and its WER."""
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(f"{results_path} not found: score the run first (weakalign score)")
    results = split_results(read_json(results_path))
    if split not in results:
        raise KeyError(f"{run_dir.name} has no results for set {split!r} (it has: {', '.join(results)})")
    r = results[split]
    refs = read_trn(run_dir / r["ref_trn"])
    hyps = read_trn(run_dir / r["hyp_trn"])
    scored = score_set(refs, hyps)
    return ({u: c.err for u, c in scored.per_utt.items()}, {u: c.words for u, c in scored.per_utt.items()},
            scored.total.wer)


@dataclass
class SystemScore:
    system: System
    wers: list[float]
    utts: list[str]
    errors: np.ndarray      # mean errors per utterance over the system's runs
    words: np.ndarray
    run_errors: np.ndarray = None  # runs x utterances
    seeds: list = field(default_factory=list)


def score_system(system: System, split: str) -> SystemScore:
    per_run = [run_errors(d, split) for d in system.run_dirs]
    utts = sorted(per_run[0][0])
    for d, (errs, _, _) in zip(system.run_dirs, per_run):
        if sorted(errs) != utts:
            raise ValueError(f"{d.name} scored other utterances of {split!r} than {system.run_dirs[0].name}")
    matrix = np.array([[e[u] for u in utts] for e, _, _ in per_run], dtype=float)
    words = np.array([per_run[0][1][u] for u in utts])
    return SystemScore(system, [w for _, _, w in per_run], utts, matrix.mean(axis=0), words, matrix,
                       [run_seed(d) for d in system.run_dirs])


def pooled_differences(a: SystemScore, b: SystemScore) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Per-unit errors of a and b and reference words for the permutation test, and how they pair.

    Same seeds on both sides (each once): run seedK of a with run seedK of b, the seed pairs'
    per-utterance vectors concatenated. Otherwise the seed-averaged per-utterance errors.
    """
    sa, sb = a.seeds, b.seeds
    if len(set(sa)) == len(sa) and len(set(sb)) == len(sb) and set(sa) == set(sb) and sa:
        order = sorted(sa, key=str)
        ea = np.concatenate([a.run_errors[sa.index(s)] for s in order])
        eb = np.concatenate([b.run_errors[sb.index(s)] for s in order])
        pairing = f"{len(order)} seed pair{'s' if len(order) > 1 else ''}"
        return ea, eb, np.tile(a.words, len(order)), pairing
    return a.errors, b.errors, a.words, "seed-averaged"


def compare(systems: list[System], split: str = "test", *, replicas: int = 2000, seed: int = 0,
            permutations: int = 10000, allow_mixed: bool = False) -> list[dict]:
    """One row per system: n, WER (mean ± std for groups), CI, relative change and p-values vs the first.

    Raises :class:`MixedRunsError` when the runs were trained under different conditions
    (see :func:`check_comparable`) unless ``allow_mixed``.
    """
    check_comparable(systems, allow_mixed)
    return compare_scores([score_system(s, split) for s in systems], split, replicas=replicas, seed=seed,
                          permutations=permutations)


def compare_scores(scores: list[SystemScore], split: str, *, replicas: int = 2000, seed: int = 0,
                   permutations: int = 10000) -> list[dict]:
    """The rows of :func:`compare` from scored systems (no fairness check)."""
    first = scores[0]
    rows = []
    for i, sc in enumerate(scores):
        ci = bootstrap_ci(sc.errors, sc.words, replicas=replicas, seed=seed)
        wer = float(np.mean(sc.wers))
        row = {"system": sc.system.name, "runs": [d.name for d in sc.system.run_dirs], "n": len(sc.wers),
               "set": split, "wer": round(wer, 2),
               "wer_std": round(statistics.stdev(sc.wers), 2) if len(sc.wers) > 1 else None,
               "ci95": ci["ci95"], "rel_change": None, "p_value": None, "p_perm": None, "p_perm_pairing": None}
        if i > 0:
            if sc.utts != first.utts:
                raise ValueError(f"{sc.system.name} and {first.system.name} were scored on different utterances "
                                 f"of {split!r}; a paired test needs the same ones")
            first_wer = float(np.mean(first.wers))
            row["rel_change"] = round(100.0 * (wer - first_wer) / first_wer, 1) if first_wer else None
            # Bootstrap over utterances on the seed-averaged per-utterance errors.
            row["p_value"] = paired_bootstrap_test(first.errors, sc.errors, sc.words, replicas=replicas,
                                                   seed=seed)["p_value"]
            ea, eb, words, pairing = pooled_differences(first, sc)
            row["p_perm"] = paired_permutation_test(ea, eb, words, permutations=permutations, seed=seed)["p_value"]
            row["p_perm_pairing"] = pairing
        rows.append(row)
    return rows


def format_p(p: float | None) -> str:
    return "—" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def format_table(rows: list[dict], warnings: list[str] | tuple = ()) -> str:
    """Markdown table of :func:`compare` rows, the warnings of the comparison above it."""
    first = rows[0]["system"] if rows else ""
    lines = [f"> **warning**: {w}" for w in warnings] + ([""] if warnings else [])
    lines += [f"| system | n | {rows[0]['set'] if rows else ''} WER (%) | 95% CI | rel. vs {first} | p vs {first} "
              f"| p_perm vs {first} |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        wer = f"{r['wer']:.2f}" + (f" ± {r['wer_std']:.2f}" if r["wer_std"] is not None else "")
        rel = "—" if r["rel_change"] is None else f"{r['rel_change']:+.1f}%"
        lines.append(f"| {r['system']} | {r['n']} | {wer} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | {rel} | "
                     f"{format_p(r['p_value'])} | {format_p(r.get('p_perm'))} |")
    return "\n".join(lines)


TESTS_NOTE = ("p: two-sided paired bootstrap test over utterances (Bisani & Ney 2004; Koehn 2004) on the "
              "per-utterance errors averaged over a group's runs. p_perm: two-sided paired permutation "
              "(sign-flip) test on per-utterance error differences pooled over seed pairs (seedK vs seedK; "
              "seed-averaged differences when the seed sets differ).")


def write_comparison(path: Path, rows: list[dict], corpus: str, warnings: list[str] | tuple = ()) -> None:
    pairing = "; ".join(f"{r['system']}: {r['p_perm_pairing']}" for r in rows if r.get("p_perm_pairing"))
    text = (f"# {corpus}: comparison on {rows[0]['set']}\n\n{format_table(rows, warnings)}\n\n"
            "n: runs (seeds) of a system. WER of a group: mean ± std over its runs. "
            f"95% CI: bootstrap over utterances (percentile). {TESTS_NOTE}"
            + (f" p_perm pairing: {pairing}." if pairing else "") + "\n")
    with atomic_open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- RESULTS.md at the repo root

def section_marker(corpus: str, end: bool) -> str:
    return f"<!-- weakalign results {corpus} {'end' if end else 'begin'} -->"


def reproducing_commands(corpus: str, run_dir: Path) -> list[str]:
    """The commands that train and score ``run_dir`` again under its name.

    ``make train score CONFIG=<c> SEED=<n>`` when the run is a config of ``conf/`` as it stands,
    under its default name; otherwise ``weakalign train --config <c> --seed <n> --set k=v ... --run
    <name>`` with the keys where the run's ``config.yaml`` differs from the config (a sweep point,
    a run published under a prefix) and ``weakalign score --run <name>``.
    """
    from .config import load_config, run_name

    seed_match = SEED_SUFFIX.search(run_dir.name)
    path = run_dir / "config.yaml"
    try:
        import yaml

        ran = yaml.safe_load(path.read_text()) if path.exists() else None
        base = load_config(ran["name"], corpus=corpus) if ran and ran.get("name") else None
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        ran = base = None
    if ran is None or base is None:
        return [f"make train score CORPUS={corpus} CONFIG={seed_group_name(run_dir.name)}"
                + (f" SEED={seed_match.group(1)}" if seed_match else "")]
    try:
        seed = int(ran.get("seed"))
    except (TypeError, ValueError):   # no seed asked for: the trainer's default
        seed = 1
    # Keys the trainer fills in (cuts, vocab_size_actual; num_senones, null in a config) are not requests.
    changed = {k: v for k, v in ran.items()
               if k not in ("name", "seed") and base.get(k) is not None and base[k] != v}
    name = ran["name"]
    if not changed and run_dir.name in (run_name(name, seed), run_name(name, None) if seed == 1 else None):
        return [f"make train score CORPUS={corpus} CONFIG={name}"
                + (f" SEED={seed}" if run_dir.name != name else "")]
    sets = "".join(f" --set {k}={v}" for k, v in sorted(changed.items()))
    return [f"weakalign train {corpus} --config {name} --seed {seed}{sets} --run {run_dir.name}",
            f"weakalign score {corpus} --run {run_dir.name}"]


TABLES_FILE = "tables.yaml"


@dataclass
class TableSpec:
    """One section of RESULTS.md: its runs (names or globs, expanded to the scored runs they match, so
    that ``--group`` names a seed group by its config), the baseline and further references of its
    p-value columns. ``ordered``: baseline first, the others by name (else the order given)."""
    section: str
    runs: list[str]
    baseline: str = "baseline"
    also_vs: tuple[str, ...] = ()
    ordered: bool = False

    def run_names(self, root: Path) -> list[str]:
        return expand_run_specs(root, self.runs, f"{TABLES_FILE} section {self.section!r}")


def expand_run_specs(root: Path, specs: list[str], where: str) -> list[str]:
    """Run names of ``specs`` (names, or globs expanded to the scored runs under ``root`` they match,
    each name once); a glob that matches nothing is an error naming ``where`` it came from."""
    available = scored_runs(root)
    names: list[str] = []
    for spec in specs:
        if Path(spec).is_dir() or not any(ch in spec for ch in "*?["):
            names.append(spec)
            continue
        matches = [n for n in available if fnmatch.fnmatchcase(n, spec)]
        if not matches:
            raise FileNotFoundError(f"{where}: no scored run matches {spec!r} under {root}")
        names += [n for n in matches if n not in names]
    return names


def tables_yaml_entries(root: Path) -> list[dict]:
    """The entries of ``root/tables.yaml`` (none when it is absent)."""
    import yaml

    path = root / TABLES_FILE
    if not path.exists():
        return []
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a list of sections and figures")
    return entries


def read_table_specs(root: Path) -> list[TableSpec]:
    """The sections ``root/tables.yaml`` defines (a list of ``{section, runs, baseline, also_vs}``);
    none when the file is absent. Runs of different alignment sets go in different sections. Its
    ``figure`` entries are :class:`~weakalign.e2e.sweep_figure.FigureSpec` s."""
    specs = []
    for i, entry in enumerate(tables_yaml_entries(root)):
        if "figure" in entry:
            continue
        if "section" not in entry or not entry.get("runs"):
            raise ValueError(f"{root / TABLES_FILE}: entry {i + 1} needs 'section' and 'runs' (or is a 'figure')")
        specs.append(TableSpec(str(entry["section"]), [str(r) for r in entry["runs"]],
                               str(entry.get("baseline", "baseline")), tuple(entry.get("also_vs", ()) or ()),
                               ordered=bool(entry.get("ordered", False))))
    return specs


def find_system(systems: list[System], name: str) -> System | None:
    """The system called ``name``, or the seed group of that name (``baseline`` finds ``baseline_seed*``)."""
    exact = next((s for s in systems if s.name == name), None)
    return exact or next((s for s in systems if {seed_group_name(d.name) for d in s.run_dirs} == {name}), None)


def scored_splits(systems: list[System], splits: tuple[str, ...]) -> tuple[str, ...]:
    """The splits some run has scored: a corpus without a scored test set (speechocean762 before
    its test half is added) reports dev."""
    scored = [s for s in splits if any(s in split_results(read_json(d / "results.json"))
                                       for system in systems for d in system.run_dirs)]
    return tuple(scored) or tuple(splits)


def _references(systems: list[System], baseline: str, also_vs: tuple[str, ...]) -> list[str]:
    """The systems the p-value columns compare against: ``baseline`` if it is in the table, then ``also_vs``."""
    found = {r: find_system(systems, r) for r in dict.fromkeys((baseline, *also_vs))}
    missing = [r for r in also_vs if found[r] is None]
    if missing:
        names = sorted(s.name for s in systems)
        raise ValueError(f"--also-vs {', '.join(missing)}: not a system of this table ({', '.join(names)})")
    return [system.name for system in found.values() if system is not None]


def _paired_p_values(scores: dict, references: list[str], split: str, replicas: int,
                     permutations: int) -> dict[tuple[str, str], dict]:
    """``(reference, system) -> row of compare_scores`` for every scored system against every reference."""
    p_values = {}
    for ref in references:
        if ref in scores:
            for name, sc in scores.items():
                if name != ref:
                    p_values[ref, name] = compare_scores([scores[ref], sc], split, replicas=replicas,
                                                         permutations=permutations)[1]
    return p_values


def _wer_cell(wers: list[float]) -> str:
    if not wers:
        return "—"
    if len(wers) == 1:
        return f"{wers[0]:.2f}"
    return f"{statistics.mean(wers):.2f} ± {statistics.stdev(wers):.2f}"


def _system_row(system: System, splits: tuple[str, ...], scores: dict, references: list[str],
                p_values: dict, replicas: int) -> list[str]:
    """One table row: n, WER per split, the last split's CI and CER, the p-values, the decoding."""
    last_split = splits[-1]
    results = [split_results(read_json(d / "results.json")) for d in system.run_dirs]
    cells = [system.name, str(len(system.run_dirs))]
    cells += [_wer_cell([r[split]["wer"] for r in results if split in r and r[split].get("wer") is not None])
              for split in splits]
    last = [r[last_split] for r in results if last_split in r]
    if len(last) == 1:
        cells += [f"[{last[0]['ci95'][0]:.2f}, {last[0]['ci95'][1]:.2f}]", f"{last[0]['cer']}"]
    elif last:
        sc = scores.get(system.name)  # a group's CI: bootstrap of its seed-averaged per-utterance errors
        ci = bootstrap_ci(sc.errors, sc.words, replicas=replicas)["ci95"] if sc else None
        cells += [f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "—", f"{statistics.mean(r['cer'] for r in last):.2f}"]
    else:
        cells += ["—", "—"]
    for ref in references:
        row = p_values.get((ref, system.name))
        cells += [format_p(row["p_value"]), format_p(row["p_perm"])] if row else ["—", "—"]
    dec = last[0].get("decode", {}) if last else {}
    cells.append(f"{dec.get('mode', '?')}" + (f" (width {dec.get('beam')}, CTC weight {dec.get('ctc_weight')})"
                                                if dec.get("mode") == "beam" else ""))
    return cells


def _section_commands(corpus: str, systems: list[System], last_split: str, from_results: bool,
                      warnings: list[str]) -> list[str]:
    """The commands that reproduce every run of the table, then the table itself."""
    commands = [f"make align CORPUS={corpus}"]
    for system in systems:
        for d in system.run_dirs:
            commands += reproducing_commands(corpus, d)
    run_names = [d.name for s in systems for d in s.run_dirs]
    grouped = any(s.is_group for s in systems)
    if from_results:
        commands.append(f"weakalign publish {corpus} {' '.join(run_names)}")
    commands.append(f"weakalign compare {' '.join(repr(s.name) if '*' in s.name else s.name for s in systems)} "
                    f"--corpus {corpus} --set {last_split}" + (" --group" if grouped else "")
                    + (" --from-results" if from_results else "")
                    + (" --allow-mixed" if any(w.startswith("compared anyway") for w in warnings) else ""))
    return commands


def _section_environment(systems: list[System], last_split: str) -> tuple[str, dict]:
    """The environment the runs were scored in, from their RESULTS.md, else this machine's."""
    from .environment import environment, recorded_environment, runs_environment

    recorded = [recorded_environment(d / "RESULTS.md") for s in systems for d in s.run_dirs]
    if recorded and all(recorded):
        return "Environment (where the runs were scored, from their RESULTS.md):", runs_environment(recorded)
    devices = {split_results(read_json(d / "results.json")).get(last_split, {}).get("device")
               for s in systems for d in s.run_dirs}
    return "Environment:", environment(next(iter(devices - {None}), None))


def results_section(corpus: str, systems: list[System], splits: tuple[str, ...] = ("dev", "test"),
                    env: dict | None = None, commands: list[str] | None = None, *, baseline: str = "baseline",
                    allow_mixed: bool = False, from_results: bool = False, replicas: int = 2000,
                    permutations: int = 10000, also_vs: tuple[str, ...] = (), section: str | None = None) -> str:
    """icefall-style section: one row per system (n, mean ± std over a group), the commands, the environment.

    When a system is named ``baseline``, every other row gets the two paired p-values vs it on the
    last split (see :func:`compare`); each system named in ``also_vs`` (e.g. the best one-hot
    system of the paper's table) gets two more columns of p-values vs it. The runs must have been
    trained under the same conditions (:func:`check_comparable`) unless ``allow_mixed``; the
    warnings are listed under the table. ``section`` names the section (its heading and markers;
    default the corpus) so that one corpus can have several tables in one file.
    """
    from .environment import environment_markdown

    warnings = check_comparable(systems, allow_mixed)
    splits = scored_splits(systems, splits)
    last_split = splits[-1]
    references = _references(systems, baseline, also_vs)
    scores = {s.name: score_system(s, last_split) for s in systems
              if all(last_split in split_results(read_json(d / "results.json")) for d in s.run_dirs)}
    p_values = _paired_p_values(scores, references, last_split, replicas, permutations)
    header = (["config", "n"] + [f"{s} WER (%)" for s in splits] + [f"{last_split} 95% CI", f"{last_split} CER (%)"]
              + [f"{p} vs {ref}" for ref in references for p in ("p", "p_perm")] + ["decoding"])
    section = section or corpus
    lines = [section_marker(section, False), f"## {section}", "",
             "E2E BLSTM encoder (6 layers, ×4 subsampling), CTC + attention decoder over BPE; "
             "`aux_*`: weak senone supervision at an encoder layer (arXiv 2311.14835).", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(_system_row(system, splits, scores, references, p_values, replicas)) + " |"
              for system in systems]
    lines += ["", "n: runs (seeds) of a config; WER: mean ± std over them."
              + (f" {TESTS_NOTE} Both on {last_split}, vs {' and vs '.join(references)}." if references else "")]
    if warnings:
        lines += ["", *[f"> **warning**: {w}" for w in warnings]]
    if commands is None:
        commands = _section_commands(corpus, systems, last_split, from_results, warnings)
    env_label = "Environment:"
    if env is None:
        env_label, env = _section_environment(systems, last_split)
    lines += ["", "Commands:", "", "```", *commands, "```", "", env_label, "", environment_markdown(env), "",
              section_marker(section, True)]
    return "\n".join(lines)


def order_systems(systems: list[System], baseline: str = "baseline") -> list[System]:
    """``baseline`` first, the others by name (the order of a table of every published run)."""
    return sorted(systems, key=lambda s: (s.name != baseline, s.name))


def update_results_md(path: Path, name: str, section: str) -> None:
    """Replace the section ``name`` (a corpus, or the ``section`` of :func:`results_section`) of ``path``
    (between its markers), or append it."""
    text = path.read_text() if path.exists() else "# RESULTS\n"
    begin, end = section_marker(name, False), section_marker(name, True)
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with atomic_open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
