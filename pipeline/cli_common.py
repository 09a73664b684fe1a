"""Options every stage command shares, so the CLI mirrors the Python API.

A stage command is ``weakalign <stage> CORPUS [--data-root data] [--exp-root exp]
[--force] [--nj N] [stage options]``; it builds a :class:`Workspace` and calls
:func:`run_stage` with the stage function.
"""

from __future__ import annotations

import functools

import click

from .workspace import Workspace


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
