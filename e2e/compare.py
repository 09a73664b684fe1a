"""``weakalign compare``: one table of several scored runs on one set, with significance.

Each system is a run dir (``exp/<c>/e2e/<run>``, given as a path, a run name or a
glob such as ``aux_ls0.5_l3_seed*``) or a *group* of run dirs: a glob matching
several runs, or, with ``group_seeds=True``, runs whose names differ only in a
``_seed<n>`` suffix. For a group the WER is given as mean ± std over its runs,
and its per-utterance errors are the mean over the runs (the "average system")
for the interval and the paired test.

Columns: WER, bootstrap 95% CI, relative change vs the first system, and the
two-sided paired bootstrap p-value vs the first system (same utterances).

>>> seed_group_name("aux_ls0.5_l3_seed2")
'aux_ls0.5_l3'
"""

from __future__ import annotations

import fnmatch
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from weakalign.pipeline.io import atomic_open, read_json

from .scoring import read_trn, score_set
from .significance import bootstrap_ci, paired_bootstrap_test

SEED_SUFFIX = re.compile(r"_seed\d+$")


def seed_group_name(run: str) -> str:
    return SEED_SUFFIX.sub("", run)


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


def run_errors(run_dir: Path, split: str) -> tuple[dict[str, int], dict[str, int], float]:
    """Per-utterance word errors and reference words of a scored run, and its WER."""
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(f"{results_path} not found: score the run first (weakalign score)")
    results = read_json(results_path)
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


def score_system(system: System, split: str) -> SystemScore:
    per_run = [run_errors(d, split) for d in system.run_dirs]
    utts = sorted(per_run[0][0])
    for d, (errs, _, _) in zip(system.run_dirs, per_run):
        if sorted(errs) != utts:
            raise ValueError(f"{d.name} scored other utterances of {split!r} than {system.run_dirs[0].name}")
    errors = np.mean([[e[u] for u in utts] for e, _, _ in per_run], axis=0)
    words = np.array([per_run[0][1][u] for u in utts])
    return SystemScore(system, [w for _, _, w in per_run], utts, errors, words)


def compare(systems: list[System], split: str = "test", *, replicas: int = 2000, seed: int = 0) -> list[dict]:
    """One row per system: WER (mean ± std for groups), CI, relative change and p-value vs the first."""
    scores = [score_system(s, split) for s in systems]
    first = scores[0]
    rows = []
    for i, sc in enumerate(scores):
        ci = bootstrap_ci(sc.errors, sc.words, replicas=replicas, seed=seed)
        wer = float(np.mean(sc.wers))
        row = {"system": sc.system.name, "runs": [d.name for d in sc.system.run_dirs], "set": split,
               "wer": round(wer, 2), "wer_std": round(statistics.stdev(sc.wers), 2) if len(sc.wers) > 1 else None,
               "ci95": ci["ci95"], "rel_change": None, "p_value": None}
        if i > 0:
            if sc.utts != first.utts:
                raise ValueError(f"{sc.system.name} and {first.system.name} were scored on different utterances "
                                 f"of {split!r}; a paired test needs the same ones")
            first_wer = float(np.mean(first.wers))
            row["rel_change"] = round(100.0 * (wer - first_wer) / first_wer, 1) if first_wer else None
            row["p_value"] = paired_bootstrap_test(first.errors, sc.errors, sc.words, replicas=replicas,
                                                   seed=seed)["p_value"]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`compare` rows."""
    first = rows[0]["system"] if rows else ""
    lines = [f"| system | runs | {rows[0]['set'] if rows else ''} WER (%) | 95% CI | rel. vs {first} | p vs {first} |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        wer = f"{r['wer']:.2f}" + (f" ± {r['wer_std']:.2f}" if r["wer_std"] is not None else "")
        rel = "—" if r["rel_change"] is None else f"{r['rel_change']:+.1f}%"
        p = "—" if r["p_value"] is None else (f"{r['p_value']:.3f}" if r["p_value"] >= 0.001 else "<0.001")
        lines.append(f"| {r['system']} | {len(r['runs'])} | {wer} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | {rel} | {p} |")
    return "\n".join(lines)


def write_comparison(path: Path, rows: list[dict], corpus: str) -> None:
    text = (f"# {corpus}: comparison on {rows[0]['set']}\n\n{format_table(rows)}\n\n"
            "WER of a group: mean ± std over its runs. 95% CI: bootstrap over utterances (percentile). "
            "p: two-sided paired bootstrap test vs the first system (Bisani & Ney 2004; Koehn 2004), "
            "on per-utterance errors averaged over a group's runs.\n")
    with atomic_open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- RESULTS.md at the repo root

def _marker(corpus: str, end: bool) -> str:
    return f"<!-- weakalign results {corpus} {'end' if end else 'begin'} -->"


def results_section(corpus: str, systems: list[System], splits: tuple[str, ...] = ("dev", "test"),
                    env: dict | None = None, commands: list[str] | None = None) -> str:
    """icefall-style section: one row per system (mean ± std over a group), the commands, the environment."""
    from .environment import environment, environment_markdown

    header = ["config", "runs"] + [f"{s} WER (%)" for s in splits] + [f"{splits[-1]} 95% CI", f"{splits[-1]} CER (%)", "decoding"]
    lines = [_marker(corpus, False), f"## {corpus}", "",
             "E2E BLSTM encoder (6 layers, ×4 subsampling), CTC + attention decoder over BPE; "
             "`aux_*`: weak senone supervision at an encoder layer (arXiv 2311.14835).", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for system in systems:
        cells = [system.name, str(len(system.run_dirs))]
        results = [read_json(d / "results.json") for d in system.run_dirs]
        for split in splits:
            wers = [r[split]["wer"] for r in results if split in r and r[split].get("wer") is not None]
            if not wers:
                cells.append("—")
            elif len(wers) == 1:
                cells.append(f"{wers[0]:.2f}")
            else:
                cells.append(f"{statistics.mean(wers):.2f} ± {statistics.stdev(wers):.2f}")
        last = [r[splits[-1]] for r in results if splits[-1] in r]
        if len(last) == 1:
            cells += [f"[{last[0]['ci95'][0]:.2f}, {last[0]['ci95'][1]:.2f}]", f"{last[0]['cer']}"]
        elif last:
            ci = compare([system], splits[-1])[0]["ci95"]
            cells += [f"[{ci[0]:.2f}, {ci[1]:.2f}]", f"{statistics.mean(r['cer'] for r in last):.2f}"]
        else:
            cells += ["—", "—"]
        dec = last[0].get("decode", {}) if last else {}
        cells.append(f"{dec.get('mode', '?')}" + (f" beam {dec.get('beam')} ctc {dec.get('ctc_weight')}"
                                                    if dec.get("mode") == "beam" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    if commands is None:
        commands = [f"make align CORPUS={corpus}"]
        for system in systems:
            for d in system.run_dirs:
                seed = SEED_SUFFIX.search(d.name)
                commands.append(f"make train score CORPUS={corpus} CONFIG={seed_group_name(d.name)}"
                                + (f" SEED={seed.group()[len('_seed'):]}" if seed else ""))
        commands.append(f"weakalign compare {' '.join(repr(s.name) if '*' in s.name else s.name for s in systems)} "
                        f"--corpus {corpus} --set {splits[-1]}")
    if env is None:
        devices = {read_json(d / "results.json").get(splits[-1], {}).get("device") for s in systems for d in s.run_dirs}
        env = environment(next(iter(devices - {None}), None))
    lines += ["", "Commands:", "", "```", *commands, "```", "", "Environment:", "", environment_markdown(env), "",
              _marker(corpus, True)]
    return "\n".join(lines)


def update_results_md(path: Path, corpus: str, section: str) -> None:
    """Replace this corpus' section of ``path`` (between its markers), or append it."""
    text = path.read_text() if path.exists() else "# RESULTS\n"
    begin, end = _marker(corpus, False), _marker(corpus, True)
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with atomic_open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
