"""Click commands of this package; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

import click

from ..pipeline.cli_common import cluster_option, corpus_command


@click.command("train")
@corpus_command
@click.option("--config", "config", default="baseline", show_default=True,
              help="Config name (conf/<name>.yaml, conf/<corpus>/<name>.yaml on top) or a YAML path.")
@click.option("--seed", type=int, default=None, help="Seed; the run dir gets a _seed<n> suffix.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda.")
@click.option("--epochs", type=int, default=None, help="Override the config's epochs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--run", default=None, help="Run dir name under exp/<c>/e2e/ (default: <config>[_seed<n>]).")
@click.option("--max-steps-per-epoch", type=int, default=None, help="Cut epochs short (smoke runs).")
def train(ws, force, nj, config, seed, device, epochs, overrides, run, max_steps_per_epoch):
    """Train an E2E model (CTC + attention [+ alignment loss]); writes exp/<c>/e2e/<run>/."""
    from .config import parse_overrides
    from .train import train_run

    torch_threads(nj)
    summary = train_run(ws, config, seed=seed, device=device, epochs=epochs, force=force,
                        overrides=parse_overrides(overrides), run=run, max_steps_per_epoch=max_steps_per_epoch)
    click.echo(summary.get("run_dir", ""))


def torch_threads(nj: int) -> None:
    import torch

    torch.set_num_threads(max(1, nj))



@click.command("score")
@corpus_command
@click.option("--config", default=None, help="Config of the run (run dir <config>[_seed<n>]).")
@click.option("--seed", type=int, default=None, help="Seed of the run.")
@click.option("--run", default=None, help="Run dir name under exp/<c>/e2e/ (instead of --config/--seed).")
@click.option("--decode", "mode", type=click.Choice(["greedy", "beam"]), default="beam", show_default=True,
              help="greedy CTC, or joint CTC/attention beam search (CTC prefix beam search for ctc_only).")
@click.option("--beam", type=int, default=10, show_default=True)
@click.option("--ctc-weight", type=float, default=0.3, show_default=True, help="CTC weight in beam search.")
@click.option("--split", "splits", multiple=True, help="Sets to score (default: every prepared one but train).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda.")
@cluster_option
def score(ws, force, nj, config, seed, run, mode, beam, ctc_weight, splits, device, cluster):
    """Decode and score every prepared split but train; writes RESULTS.md and results.json in the run dir.

    The decoding runs in --nj jobs of one thread each (a local cluster of --nj processes, or
    --cluster); --nj 1 decodes in this process. The hypotheses do not depend on --nj."""
    from ..pipeline.stage import run_stage
    from .score import run_dir_for, score_run

    if run is None and config is None:
        raise click.UsageError("give --config (and --seed) or --run")
    torch_threads(nj)
    run_dir = run_dir_for(ws, config, seed, run)
    # Per-split resumption is inside score_run (complete hyp.trn files are kept unless --force).
    if not (run_dir / "model_avg.pt").exists():
        raise click.ClickException(f"{run_dir / 'model_avg.pt'} not found: train the run first (weakalign train)")
    summary = run_stage(f"score_{run_dir.name}", ws, score_run, force=True, run_dir=run_dir, mode=mode,
                        device=device, redecode=force, splits=list(splits) or None,
                        options={"beam": beam, "ctc_weight": ctc_weight}, nj=nj, cluster=cluster)
    for split, r in summary["results"].items():
        click.echo(f"{run_dir.name} {split}: WER {r['wer']}% {r['ci95']}  CER {r['cer']}%  ({r['words']} words)")


def runs_location_options(fn):
    """``--exp-root``, ``--results-root`` and ``--from-results``: where compare/results-table find run dirs."""
    fn = click.option("--from-results", is_flag=True,
                      help="Read the published runs in <results-root>/<corpus>/ (weakalign publish) instead of "
                           "<exp-root>/<corpus>/e2e/: no exp/ needed.")(fn)
    fn = click.option("--results-root", default="results", show_default=True,
                      help="Parent of the published results/<corpus>/ (with --from-results).")(fn)
    fn = click.option("--exp-root", default="exp", show_default=True)(fn)
    return fn


@click.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--corpus", default="an4", show_default=True)
@runs_location_options
@click.option("--set", "split", default="test", show_default=True, help="Scored set to compare on.")
@click.option("--group", "group_seeds", is_flag=True, help="Group runs differing only in _seed<n> (mean ± std).")
@click.option("--replicas", default=2000, show_default=True, type=int, help="Bootstrap replicas.")
@click.option("--permutations", default=10000, show_default=True, type=int,
              help="Random sign flips of the permutation test (exact when <= 16 differences are non-zero).")
@click.option("--allow-mixed", is_flag=True,
              help="Compare runs trained on different alignment sets / stopping rules / selection criteria "
                   "(or without a training record) anyway, with a warning above the table.")
@click.option("--out", default=None, help="Markdown output (default <run root>/compare_<set>.md).")
def compare_cmd(runs, corpus, exp_root, results_root, from_results, split, group_seeds, replicas, permutations,
                allow_mixed, out):
    """Table of scored runs: n, WER, 95% CI, change and two paired p-values vs the first run.

    p: paired bootstrap over utterances on seed-averaged per-utterance errors; p_perm: paired
    sign-flip test on per-utterance differences pooled over seed pairs. Refuses runs trained on
    different alignments, stopping rules or selection criteria unless --allow-mixed.
    """
    from pathlib import Path

    from .compare import (check_comparable, compare_scores, format_table, resolve_systems, runs_root, score_system,
                          write_comparison)

    root = runs_root(corpus, exp_root=exp_root, results_root=results_root, from_results=from_results)
    try:
        systems = resolve_systems(root, list(runs), group_seeds)
        warnings = check_comparable(systems, allow_mixed)
        rows = compare_scores([score_system(s, split) for s in systems], split, replicas=replicas,
                              permutations=permutations)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise click.ClickException(str(e).strip('"'))
    out = Path(out) if out else root / f"compare_{split}.md"
    write_comparison(out, rows, corpus, warnings)
    click.echo(format_table(rows, warnings))
    click.echo(f"(written to {out})")


@click.command("sweep")
@corpus_command
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2",
              help="Grid axis (repeatable); m, layer, aux_weight or any config key.")
@click.option("--seeds", default="", help="Comma-separated seeds, e.g. 1,2.")
@click.option("--base", default="aux_ls0.5_l3", show_default=True, help="Base config.")
@click.option("--jobs", default=1, show_default=True, type=int, help="Points run at the same time.")
@click.option("--report-set", "split", default="test", show_default=True,
              help="Set the table and plot report (dev to choose a point, test to report it).")
@click.option("--decode", "mode", type=click.Choice(["greedy", "beam"]), default="beam", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the epochs of every point.")
@click.option("--max-steps-per-epoch", type=int, default=None, help="Cut epochs short (smoke runs).")
@click.option("--set", "fixed", multiple=True, metavar="KEY=VALUE", help="Config override for every point.")
@cluster_option(workers="--jobs")
def sweep(ws, force, nj, grid, seeds, base, jobs, split, mode, device, epochs, max_steps_per_epoch, fixed, cluster):
    """Train + score a grid of configs resumably; writes a table and a PNG of WER vs m per layer.

    --jobs points run at the same time (--jobs > 1: on a local Dask cluster of --jobs processes, or
    on --cluster's workers), each point's train and score with --nj / --jobs threads."""
    from .config import parse_overrides
    from .sweep import SweepSettings, parse_grid, run_sweep

    try:
        parsed = parse_grid(list(grid))
        fixed = parse_overrides(fixed)
    except ValueError as e:
        raise click.UsageError(str(e))
    train_args = (["--epochs", str(epochs)] if epochs else []) + (
        ["--max-steps-per-epoch", str(max_steps_per_epoch)] if max_steps_per_epoch else [])
    settings = SweepSettings(base=base, split=split, decode=mode, device=device, threads=max(1, nj // max(1, jobs)),
                             train_args=train_args, fixed=fixed, force=force)
    result = run_sweep(ws, parsed, [int(s) for s in seeds.split(",") if s.strip()] or None, settings, jobs=jobs,
                       cluster=cluster)
    click.echo(result["table"])
    if result["failed"]:
        raise click.ClickException(f"{len(result['failed'])} point(s) failed: {', '.join(result['failed'])}")


@click.command("results-table")
@click.argument("corpus")
@click.argument("runs", nargs=-1)
@runs_location_options
@click.option("--set", "splits", multiple=True, default=("dev", "test"), show_default=True)
@click.option("--group", "group_seeds", is_flag=True, help="Group runs differing only in _seed<n>.")
@click.option("--baseline", default="baseline", show_default=True,
              help="System the p-values are against (columns only when it is in the table).")
@click.option("--also-vs", multiple=True, metavar="SYSTEM",
              help="Two more p-value columns vs this system (repeatable), e.g. the best one-hot system.")
@click.option("--allow-mixed", is_flag=True, help="Tabulate runs trained under different conditions anyway.")
@click.option("--section", default=None, help="Name of the section (heading and markers); default the corpus.")
@click.option("--out", default="RESULTS.md", show_default=True, help="File whose section is (re)written.")
def results_table(corpus, runs, exp_root, results_root, from_results, splits, group_seeds, baseline, also_vs,
                  allow_mixed, section, out):
    """Write the icefall-style results section of CORPUS (from the runs' results.json) into --out.

    Without RUNS: the sections ``<run root>/tables.yaml`` lists (each: its runs, baseline and
    references), else one section of every scored run of the run root (baseline first, then by name);
    and the figures it lists (a sweep's WER vs one axis, mean ± std over seeds: ``<run root>/<figure>.png``
    and a section that shows it).
    """
    from pathlib import Path

    from .compare import (TableSpec, order_systems, read_table_specs, resolve_systems, results_section, runs_root,
                          scored_runs, update_results_md)
    from .sweep_figure import build_figure, read_figure_specs

    root = runs_root(corpus, exp_root=exp_root, results_root=results_root, from_results=from_results)
    try:
        tables = [] if runs else read_table_specs(root)
        if not tables:
            every = list(runs) or scored_runs(root)
            if not every:
                raise click.ClickException(f"no scored run under {root}"
                                           + (" (weakalign publish copies them there)" if from_results else ""))
            tables = [TableSpec(section or corpus, every, baseline, tuple(also_vs), ordered=not runs)]
        for table in tables:
            systems = resolve_systems(root, table.run_names(root), group_seeds)
            if table.ordered:
                systems = order_systems(systems, table.baseline)
            text = results_section(corpus, systems, tuple(splits), baseline=table.baseline, allow_mixed=allow_mixed,
                                   from_results=from_results, also_vs=table.also_vs, section=table.section)
            update_results_md(Path(out), table.section, text)
            click.echo(text)
        for figure in [] if runs else read_figure_specs(root):
            text = build_figure(root, figure, Path(out), tuple(splits), allow_mixed=allow_mixed)
            update_results_md(Path(out), figure.section, text)
            click.echo(text)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise click.ClickException(str(e).strip('"'))


@click.command("publish")
@click.argument("corpus")
@click.argument("runs", nargs=-1, required=True)
@click.option("--exp-root", default="exp", show_default=True)
@click.option("--results-root", default="results", show_default=True, help="Parent of results/<corpus>/.")
@click.option("--prefix", default="", help="Publish each run as <prefix><run> (runs of another alignment set).")
def publish_cmd(corpus, runs, exp_root, results_root, prefix):
    """Copy scored runs' small text outputs (results.json, trn files, metrics, config, training record)
    from <exp-root>/<corpus>/e2e/<run>/ to <results-root>/<corpus>/<prefix><run>/; RUN may be a glob."""
    from .publish import publish

    try:
        published = publish(corpus, list(runs), exp_root=exp_root, results_root=results_root, prefix=prefix)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise click.ClickException(str(e).strip('"'))
    for name, files in published.items():
        click.echo(f"{name}: {len(files)} files -> {files[-1].parent if files else ''}")


COMMANDS: list = [train, score, compare_cmd, sweep, results_table, publish_cmd]


@click.command("emnet-plot")
@corpus_command(force=False)
@click.argument("run")
@click.option("--ref-run", default="ctc_only", show_default=True,
              help="Run whose CTC posteriors are drawn above the student's and teacher's ('' for none).")
@click.option("--utt", default=None, help="Utterance to draw (default: the first of --split).")
@click.option("--split", default="dev", show_default=True)
def emnet_plot_cmd(ws, nj, run, ref_run, utt, split):
    """EM-Network figures of RUN: teacher vs student losses/WER per epoch (emnet_curves.png) and one
    utterance's frame-wise CTC posteriors of --ref-run, the student and the teacher (emnet_posteriors.png)."""
    from .emnet_figures import emnet_plot

    torch_threads(nj)
    outputs = emnet_plot(ws, run, ref_run=ref_run or None, utt=utt, split=split)
    for path in outputs.values():
        click.echo(str(path))


COMMANDS.append(emnet_plot_cmd)


@click.command("time-to-accuracy")
@click.argument("corpus")
@runs_location_options
@click.option("--target", "targets", multiple=True, type=float,
              help="Dev greedy-CTC WER target in % (repeatable) [default: 50 30 20 15 12 10].")
@click.option("--baseline", default="baseline", show_default=True, help="Group the ratios are against.")
@click.option("--per-run", is_flag=True, help="Also a table of every run.")
@click.option("--json", "json_out", default=None, help="Also write the full result as JSON here.")
def time_to_accuracy_cmd(corpus, exp_root, results_root, from_results, targets, baseline, per_run, json_out):
    """Updates and wall time at which each run first reaches each dev WER target, per config (mean over
    seeds), and the ratio to the baseline; a markdown table. (`weakalign bench` writes the same as
    exp/bench/time_to_accuracy.json.)"""
    from ..pipeline.io import write_json
    from .compare import runs_root
    from .time_to_accuracy import DEFAULT_TARGETS, format_markdown, time_to_accuracy

    root = runs_root(corpus, exp_root=exp_root, results_root=results_root, from_results=from_results)
    result = time_to_accuracy([root], targets or DEFAULT_TARGETS, baseline=baseline)
    if not result["runs"]:
        raise click.ClickException(result["note"])
    if json_out:
        write_json(json_out, {"corpus": corpus, **result})
    click.echo(format_markdown(result, per_run=per_run))


@click.command("curves")
@click.argument("corpus")
@click.argument("runs", nargs=-1, required=True)
@runs_location_options
@click.option("--out", default=None, help="PNG (default <run root>/curves_dev.png: results/<c>/ with "
                                          "--from-results, else exp/<c>/e2e/).")
def curves_cmd(corpus, runs, exp_root, results_root, from_results, out):
    """Dev greedy-CTC WER and dev CTC loss vs updates of RUNS (names or globs), one thin line per seed,
    runs differing only in _seed<n> drawn in one colour."""
    from .time_to_accuracy import curves

    try:
        path = curves(corpus, list(runs), exp_root=exp_root, results_root=results_root,
                      from_results=from_results, out=out)
    except FileNotFoundError as e:
        raise click.ClickException(str(e).strip('"'))
    click.echo(str(path))


COMMANDS += [time_to_accuracy_cmd, curves_cmd]
