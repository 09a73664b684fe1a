"""The ``weakalign`` command: one subcommand per stage, plus ``align`` to run them in order."""

from __future__ import annotations

import os

import kaldi_hmm_gmm  # noqa: F401  -- must be imported before kaldifst (the other order deadlocks)

import click

from . import recipe
from .align_options import forwarded_parameters, invoke_stage, runtime_args, read_config, requested_on_command_line
from .cli_common import ErrorsInOneLine, cluster_option
from .options import recorded_option
from .report import log_skip_table
from .stage import PlannedStage, log, planning, setup_console_logging
from .workspace import Workspace


@click.group(cls=ErrorsInOneLine)
@click.option("--verbose", is_flag=True,
              help="Print the full traceback of an error (a stage's is always in exp/<corpus>/log/<stage>.log).")
@click.pass_context
def cli(ctx, verbose):
    """Triphone alignments from a hybrid Kaldi-style system, as weak supervision for E2E ASR.

    A failing command prints one line, the cause and what to do, and exits 1."""
    ctx.meta["weakalign.verbose"] = verbose
    setup_console_logging()


def _add_package_commands():
    from . import commands as pipeline_commands
    from ..kaldi_steps import commands as kaldi_commands
    from ..align import commands as align_commands
    from ..e2e import commands as e2e_commands

    for module in (pipeline_commands, kaldi_commands, align_commands, e2e_commands):
        for command in module.COMMANDS:
            cli.add_command(command)


_add_package_commands()


@cli.command("align", help="Run the alignment stages in order: " + " -> ".join(recipe.ALIGN_STAGES) + "; "
             "the opt-in " + ", ".join(f"{s} (after {a})" for s, a in recipe.OPT_IN_STAGES.items())
             + " only when --from or --stop-after names it or the hybrid trains on its alignments (--source-ali; its options: --<stage>-<option>). "
             "Every stage option is an option here too (--<stage>-<option>, or --<option> when one stage has it), "
             "or goes in --config; a stage not given an option runs with the one it was last asked for.")
@click.argument("corpus")
@click.option("--from", "start", default=None, help="First stage to run.")
@click.option("--stop-after", default=None, help="Last stage to run.")
@click.option("--data-root", default="data", show_default=True)
@click.option("--exp-root", default="exp", show_default=True)
@click.option("--nj", default=2, show_default=True, type=int)
@cluster_option
@click.option("--force", is_flag=True, help="Redo the selected stages even if done.")
@click.option("--config", "config", default=None, type=click.Path(exists=True, dir_okay=False),
              help="YAML of per-stage options ({stage: {option: value}}); the command line wins over it.")
@click.option("--dry-run", is_flag=True,
              help="Run nothing: say which stages are done with these options and which would run, and why.")
@click.pass_context
def align(ctx, corpus, start, stop_after, data_root, exp_root, nj, cluster, force, config, dry_run, **forwarded):
    chosen = read_config(ctx, config, cli.commands, recipe.stage_order()) if config else {}
    for stage, options in requested_on_command_line(ctx, _FORWARDED, forwarded).items():
        chosen.setdefault(stage, {}).update(options)
    ws = Workspace(corpus, data_root=data_root, exp_root=exp_root)
    try:
        stages = recipe.select_stages(start, stop_after, needed=[hybrid_source_stage(ws, chosen.get("hybrid", {}))])
    except ValueError as e:
        raise click.UsageError(str(e))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and stages != ["hybrid"]:
        raise click.UsageError("under torchrun, align runs the hybrid stage alone (--from hybrid --stop-after "
                               f"hybrid), not {' -> '.join(stages)}: run the other stages without torchrun "
                               "(--cluster puts the GMM stages' jobs on several machines)")
    unused = [f"{stage}.{name}" for stage, options in chosen.items() if stage not in stages for name in options]
    if unused:
        log.warning("[%s] options for stages this run leaves out, not used: %s", corpus, ", ".join(unused))
    args = [corpus, "--data-root", data_root, "--exp-root", exp_root] + (["--force"] if force else [])
    if dry_run:
        plan_stages(ctx, stages, args, chosen, reads={"hybrid": [hybrid_source_stage(ws, chosen.get("hybrid", {}))]})
        return
    for name in stages:
        command = cli.commands[name]
        invoke_stage(ctx, command, args + runtime_args(command, nj, cluster), chosen.get(name, {}))
    log_skip_table(ws, recipe.stage_order())


def plan_stages(ctx, stages: list[str], args: list[str], chosen: dict, reads: dict) -> list[PlannedStage]:
    """``align --dry-run``: each stage's command as align would invoke it, stopped where it would
    start running (:func:`~weakalign.pipeline.stage.planning`, with its ``reads``); one line per stage
    on stdout."""
    planned = []
    with planning(reads):
        for name in stages:
            try:
                invoke_stage(ctx, cli.commands[name], args, chosen.get(name, {}))
            except PlannedStage as decision:
                planned.append(decision)
            except (click.ClickException, FileNotFoundError):
                # Its inputs are an earlier stage's outputs, not made yet: it runs after that one.
                earlier = [p.name for p in planned if p.action == "run"]
                if not earlier:
                    raise
                planned.append(PlannedStage(name, "run", [f"{earlier[-1]} would run first"]))
            click.echo(str(planned[-1]))
    return planned


def hybrid_source_stage(ws: Workspace, hybrid_options: dict) -> str:
    """The GMM stage whose alignments the hybrid will train on: ``--source-ali`` as given to ``align``,
    else as last asked of the hybrid stage (its recorded request), else the corpus's default."""
    source = (hybrid_options.get("source_ali") or recorded_option(ws, "hybrid", "source_ali")
              or recipe.default_source_ali(ws.corpus))
    return recipe.source_stage_of(source)


_FORWARDED = forwarded_parameters(cli.commands, recipe.stage_order(), prefixed_only=tuple(recipe.OPT_IN_STAGES))
align.params.extend(copy for _, _, copy in _FORWARDED)
