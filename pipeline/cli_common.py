"""Options every stage command shares, so the CLI mirrors the Python API.

A stage command is ``weakalign <stage> CORPUS [--data-root data] [--exp-root exp]
[--force] [--nj N] [stage options]``; it builds a :class:`Workspace` and calls
:func:`run_stage_command` with the stage function: the options given on the command
line are the request, click's defaults only fill in what was never asked for.
"""

from __future__ import annotations

import functools
import logging
import traceback

import click
from click.core import ParameterSource

from .prerequisites import as_missing_input
from .stage import MissingInput, is_planning, log, run_stage, setup_console_logging
from .workspace import Workspace

#: Where a value came from when nobody chose it.
_NOT_CHOSEN = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def corpus_command(fn=None, *, force: bool = True, nj: bool = True):
    """Decorate a click command body ``fn(ws, force, nj, **options)``. A command that has no use for
    ``--force`` or ``--nj`` drops it (``force=False`` / ``nj=False``) and its body's parameter too,
    so no command takes an option that changes nothing.

    >>> @click.command()
    ... @corpus_command(force=False, nj=False)
    ... def show(ws):
    ...     click.echo(ws.corpus)
    >>> [p.name for p in show.params]
    ['corpus', 'data_root', 'exp_root']
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(corpus, data_root, exp_root, **options):
            return fn(Workspace(corpus, data_root=data_root, exp_root=exp_root), **options)

        if nj:
            wrapper = click.option("--nj", default=2, show_default=True, type=int, help="Parallel processes.")(wrapper)
        if force:
            wrapper = click.option("--force", is_flag=True,
                                   help="Redo the stage even if its done-marker exists.")(wrapper)
        wrapper = click.option("--exp-root", default="exp", show_default=True, help="Parent of exp/<corpus>.")(wrapper)
        wrapper = click.option("--data-root", default="data", show_default=True, help="Parent of data/<corpus>.")(wrapper)
        return click.argument("corpus")(wrapper)

    return decorate(fn) if fn is not None else decorate


def cluster_option(fn=None, *, workers: str = "--nj"):
    """``--cluster``: where a stage's jobs run (:mod:`weakalign.kaldi_steps.execution`). A runtime
    option like ``--nj``: never part of the stage's identity, so changing it redoes nothing.
    ``workers``: the option that sizes the default local cluster (``--jobs`` for ``sweep``)."""
    def decorate(f):
        return click.option("--cluster", default=None, metavar="tcp://HOST:8786|slurm|pbs|sge[:CONFIG]",
                            help="Run the jobs on the Dask scheduler at this address, or on workers in batch jobs "
                                 "of a Slurm/PBS/SGE queue as conf/cluster.yaml (or CONFIG) says [default: a local "
                                 f"cluster of {workers} worker processes, started and stopped by the stage]. Not part "
                                 "of the stage's identity: the results are the same bytes wherever the jobs run.")(f)
    return decorate(fn) if fn is not None else decorate


def chosen_by_user(ctx: click.Context, name: str, value) -> bool:
    """Whether the option ``name`` was given (command line, ``align``'s options or config), not
    click's default. A context without sources (``ctx.invoke``) counts values unlike the default."""
    source = ctx.get_parameter_source(name)
    if source is not None:
        return source not in _NOT_CHOSEN
    param = next((p for p in ctx.command.params if p.name == name), None)
    return param is None or value != param.get_default(ctx)


def split_request(ctx: click.Context, options: dict) -> tuple[dict, dict]:
    """``(chosen, defaults)``: the options the user gave (:func:`chosen_by_user`) and the others."""
    chosen = {k: v for k, v in options.items() if chosen_by_user(ctx, k, v)}
    return chosen, {k: v for k, v in options.items() if k not in chosen}


def run_stage_command(name: str, ws: Workspace, fn, *, force: bool, **options) -> dict:
    """:func:`run_stage` from inside a stage command: the options the user gave are requested,
    the others pass as defaults (the recorded request wins over them). A missing input ends
    the command with its one-line message; a missing file that another stage writes, with one
    naming that stage (:func:`~weakalign.pipeline.prerequisites.as_missing_input`)."""
    chosen, defaults = split_request(click.get_current_context(), options)
    return _run_requested(name, ws, fn, force, chosen, defaults)


def _run_requested(name: str, ws: Workspace, fn, force: bool, chosen: dict, defaults: dict) -> dict:
    try:
        return run_stage(name, ws, fn, force=force, defaults=defaults, **chosen)
    except MissingInput as e:
        raise click.ClickException(str(e)) from e
    except FileNotFoundError as e:
        missing = as_missing_input(ws, name, e)
        if missing is None:
            raise
        raise click.ClickException(str(missing)) from e


def run_stage_command_on_ranks(name: str, ws: Workspace, fn, *, force: bool, procs: int = 1, **options) -> dict:
    """:func:`run_stage_command` for a stage that trains under ``torchrun`` (``hybrid``); without it,
    that function itself, or with ``procs`` > 1 the stage on that many local ranks, launched here as
    ``torchrun --standalone --nproc-per-node procs`` would (:func:`~weakalign.pipeline.distributed.
    launch_local_ranks`), each rank with an equal share of the cores unless ``OMP_NUM_THREADS`` says.

    Rank 0 runs the stage as a single process would: it decides whether the stage is done or is
    redone, with which options (the recorded request included), and keeps its log and marker. The
    other ranks call ``fn`` with exactly the options rank 0 runs it with, received from rank 0 when
    it starts ``fn``, or return ``{}`` when rank 0 does not start it (already done, or failed before).
    ``fn`` itself divides the work and has rank 0 alone write (:mod:`weakalign.pipeline.distributed`).
    ``procs`` changes where the work runs, not what the stage makes: it is not part of the request.
    """
    from .distributed import is_distributed, launch_local_ranks

    if procs < 1:
        raise click.BadParameter(f"must be >= 1, got {procs}", param_hint="--procs")
    chosen, defaults = split_request(click.get_current_context(), options)
    if procs > 1 and not is_distributed():
        _check_one_gpu_per_rank(procs, {**defaults, **chosen}.get("device") or "auto")
    if is_planning():   # deciding only: nothing to launch
        return _run_requested(name, ws, fn, force, chosen, defaults)
    if is_distributed() or procs == 1:
        return _run_on_ranks(name, ws, fn, force, chosen, defaults)
    try:
        return launch_local_ranks(procs, _run_on_local_rank, name, ws, fn, force, chosen, defaults)
    except RuntimeError as e:   # a rank failed: its error, not the launcher's report
        raise click.ClickException(f"{name} on {procs} local ranks: {e}") from e


def _check_one_gpu_per_rank(procs: int, device: str) -> None:
    """Local ranks on CUDA take one GPU each (``cuda:<local rank>``): refuse more ranks than GPUs."""
    import torch

    from .distributed import resolve_device

    if resolve_device(device).type == "cuda" and procs > torch.cuda.device_count():
        raise click.BadParameter(f"{procs} ranks on CUDA need {procs} GPUs, this machine has "
                                 f"{torch.cuda.device_count()}", param_hint="--procs")


def _run_on_local_rank(name: str, ws: Workspace, fn, force: bool, chosen: dict, defaults: dict) -> dict:
    """One rank of :func:`run_stage_command_on_ranks` in a process of its own (no click context)."""
    setup_console_logging()
    try:
        return _run_on_ranks(name, ws, fn, force, chosen, defaults)
    except click.ClickException as e:   # the one-line message, as the launcher reports it
        raise RuntimeError(e.format_message()) from None


def _run_on_ranks(name: str, ws: Workspace, fn, force: bool, chosen: dict, defaults: dict) -> dict:
    from .distributed import broadcast_from_rank0, is_distributed, setup_distributed

    if not is_distributed():
        return _run_requested(name, ws, fn, force, chosen, defaults)
    rank, _, _ = setup_distributed({**defaults, **chosen}.get("device") or "auto")
    if rank != 0:
        log.setLevel(logging.WARNING)   # rank 0 says what the stage does
        kwargs = broadcast_from_rank0(None)
        return {} if kwargs is None else fn(ws, **kwargs)
    started = False

    @functools.wraps(fn)   # the signature and declared inputs stay fn's: the request is fn's
    def announced(ws, **kwargs):
        nonlocal started
        started = True
        broadcast_from_rank0(kwargs)
        return fn(ws, **kwargs)

    try:
        return _run_requested(name, ws, announced, force, chosen, defaults)
    finally:
        if not started:
            broadcast_from_rank0(None)


#: The longest error message printed on the console line (the log file has it whole).
MAX_ERROR_CHARS = 400


def error_line(error: BaseException) -> str:
    """The one console line of an unexpected error: its type, its message on one line, and
    where the traceback is (the stage log :func:`~weakalign.pipeline.stage.run_stage` wrote it to).

    >>> error_line(ValueError("bad\\n  value"))
    'ValueError: bad value (--verbose to print the traceback)'
    >>> e = KeyError("x"); e.stage_log = "exp/an4/log/tri1.log"
    >>> error_line(e)
    "KeyError: 'x' (full traceback: exp/an4/log/tri1.log; --verbose to print it)"
    """
    message = " ".join(str(error).split())
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + " ..."
    log_path = getattr(error, "stage_log", None)
    where = f"full traceback: {log_path}; --verbose to print it" if log_path else "--verbose to print the traceback"
    return f"{type(error).__name__}: {message} ({where})" if message else f"{type(error).__name__} ({where})"


class ErrorsInOneLine(click.Group):
    """A command group whose failing commands print one ``Error:`` line and exit 1: the full
    traceback is printed only with ``--verbose`` (``ctx.meta["weakalign.verbose"]``), and a stage's
    is always in its log file."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except MissingInput as e:  # its message says what is missing and what to run: no type, no log
            if ctx.meta.get("weakalign.verbose"):
                click.echo("".join(traceback.format_exception(e)).rstrip(), err=True)
            raise click.ClickException(str(e)) from e
        except click.ClickException as e:
            if ctx.meta.get("weakalign.verbose") and e.__cause__ is not None:
                click.echo("".join(traceback.format_exception(e.__cause__)).rstrip(), err=True)
            raise
        except Exception as e:
            if ctx.meta.get("weakalign.verbose"):
                click.echo("".join(traceback.format_exception(e)).rstrip(), err=True)
            raise click.ClickException(error_line(e)) from e
