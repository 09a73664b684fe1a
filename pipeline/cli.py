"""The ``weakalign`` command: one subcommand per stage, plus ``align`` to run them in order."""

from __future__ import annotations

import kaldi_hmm_gmm  # noqa: F401  -- must be imported before kaldifst (the other order deadlocks)

import click

from . import recipe
from .stage import setup_console_logging


@click.group()
def cli():
    """Triphone alignments from a hybrid Kaldi-style system, as weak supervision for E2E ASR."""
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


@cli.command("align", help="Run the alignment stages in order: " + " -> ".join(recipe.ALIGN_STAGES) + ".")
@click.argument("corpus")
@click.option("--from", "start", default=None, help="First stage to run.")
@click.option("--stop-after", default=None, help="Last stage to run.")
@click.option("--data-root", default="data", show_default=True)
@click.option("--exp-root", default="exp", show_default=True)
@click.option("--nj", default=2, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Redo the selected stages even if done.")
@click.pass_context
def align(ctx, corpus, start, stop_after, data_root, exp_root, nj, force):
    try:
        stages = recipe.select_stages(start, stop_after)
    except ValueError as e:
        raise click.UsageError(str(e))
    for name in stages:
        command = cli.commands[name]
        ctx.invoke(command, corpus=corpus, data_root=data_root, exp_root=exp_root, nj=nj, force=force)
