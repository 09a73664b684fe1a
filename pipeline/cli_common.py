"""Options every stage command shares, so the CLI mirrors the Python API.

A stage command is ``weakalign <stage> CORPUS [--data-root data] [--exp-root exp]
[--force] [--nj N] [stage options]``; it builds a :class:`Workspace` and calls
:func:`run_stage_command` with the stage function: the options given on the command
line are the request, click's defaults only fill in what was never asked for.
"""

from __future__ import annotations

import functools

import click
from click.core import ParameterSource

from .stage import MissingInput, run_stage
from .workspace import Workspace

#: Where a value came from when nobody chose it.
_NOT_CHOSEN = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def corpus_command(fn):
    """Decorate a click command body ``fn(ws, force, nj, **options)``."""

    @click.argument("corpus")
    @click.option("--data-root", default="data", show_default=True, help="Parent of data/<corpus>.")
    @click.option("--exp-root", default="exp", show_default=True, help="Parent of exp/<corpus>.")
    @click.option("--force", is_flag=True, help="Redo the stage even if its done-marker exists.")
    @click.option("--nj", default=2, show_default=True, type=int, help="Parallel processes.")
    @functools.wraps(fn)
    def wrapper(corpus, data_root, exp_root, force, nj, **options):
        ws = Workspace(corpus, data_root=data_root, exp_root=exp_root)
        return fn(ws, force=force, nj=nj, **options)

    return wrapper


def chosen_by_user(ctx: click.Context, name: str, value) -> bool:
    """Whether the option ``name`` was given (command line, ``align``'s options or config), not
    click's default. A context without sources (``ctx.invoke``) counts values unlike the default."""
    source = ctx.get_parameter_source(name)
    if source is not None:
        return source not in _NOT_CHOSEN
    param = next((p for p in ctx.command.params if p.name == name), None)
    return param is None or value != param.get_default(ctx)


def run_stage_command(name: str, ws: Workspace, fn, *, force: bool, **options) -> dict:
    """:func:`run_stage` from inside a stage command: the options the user gave are requested,
    the others pass as defaults (the recorded request wins over them). A missing input ends
    the command with its one-line message."""
    ctx = click.get_current_context()
    chosen = {k: v for k, v in options.items() if chosen_by_user(ctx, k, v)}
    defaults = {k: v for k, v in options.items() if k not in chosen}
    try:
        return run_stage(name, ws, fn, force=force, defaults=defaults, **chosen)
    except MissingInput as e:
        raise click.ClickException(str(e)) from e
