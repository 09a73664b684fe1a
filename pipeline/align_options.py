"""The stage options ``weakalign align`` passes on: from its command line or a ``--config`` YAML.

Every option of every stage command is also an option of ``align``, spelled
``--<stage>-<option>`` (``--tri1-num-leaves``), and plain ``--<option>`` as well when only
one stage has it (``--lexicon``, ``--num-leaves``; ``--total-gauss`` is mono's and tri1's,
hence ``--mono-total-gauss`` / ``--tri1-total-gauss``). ``--config FILE`` holds the same per stage::

    lang:
      lexicon: /data/an4/etc/an4.dic
    tri1:
      num_leaves: 500
      total_gauss: 4000
    hybrid:
      epochs: 4
      speed_perturb: none      # or [0.9, 1.1], as the command line's 0.9,1.1

The command line wins over the config. Each stage gets its options as if typed on its own
command line, so they are *requested* (recorded and compared, see
:mod:`weakalign.pipeline.options`); what neither names is the stage's recorded request, else its default.
"""

from __future__ import annotations

from collections import Counter

import click
from click.core import ParameterSource

#: The options that ``align`` sets for every stage itself (``cluster``: for the stages that have it).
SHARED = frozenset({"corpus", "data_root", "exp_root", "force", "nj", "cluster"})


def stage_parameters(command: click.Command) -> list[click.Option]:
    """The options particular to one stage command."""
    return [p for p in command.params if isinstance(p, click.Option) and p.name not in SHARED]


def runtime_args(command: click.Command, nj: int, cluster: str | None) -> list[str]:
    """``--nj`` and ``--cluster`` for a stage command that takes them (a stage without parallel jobs
    takes neither)."""
    takes = {p.name for p in command.params}
    return ((["--nj", str(nj)] if "nj" in takes else [])
            + (["--cluster", cluster] if cluster and "cluster" in takes else []))


def forwarded_parameters(commands: dict, stages: list[str], prefixed_only=()) -> list[tuple[str, click.Option,
                                                                                          click.Option]]:
    """``(stage, the stage's option, align's copy of it)`` for every option of every stage. The
    stages of ``prefixed_only`` (opt-in ones) get ``--<stage>-<option>`` only and leave the plain
    spelling to the others (``--num-leaves`` stays tri1's beside ``--tri2-num-leaves``)."""
    counts = Counter(p.name for stage in stages if stage not in prefixed_only
                     for p in stage_parameters(commands[stage]))
    return [(stage, param, forwarded_parameter(stage, param,
                                               plain=stage not in prefixed_only and counts[param.name] == 1))
            for stage in stages for param in stage_parameters(commands[stage])]


def forwarded_parameter(stage: str, param: click.Option, plain: bool) -> click.Option:
    """``align``'s copy of a stage option: same type, flag and callback, no default (a value is
    passed on only when given); named ``--<stage>-<opt>``, and ``--<opt>`` too when ``plain``."""
    def spelled(prefix: str) -> list[str]:
        opts = [f"--{prefix}{o[2:]}" for o in param.opts]
        if param.secondary_opts:  # --decode/--no-decode: one declaration per pair
            return [f"{o}/--{prefix}{s[2:]}" for o, s in zip(opts, param.secondary_opts)]
        return opts

    decls = spelled(f"{stage}-") + (spelled("") if plain else []) + [f"{stage}__{param.name}"]
    default = f"[{stage}'s default: {param.default}]" if param.show_default and param.default is not None else ""
    return click.Option(decls, type=None if param.is_bool_flag else param.type, is_flag=param.is_flag or None,
                        multiple=param.multiple, default=None, callback=param.callback,
                        help=" ".join(filter(None, [f"[{stage}]", param.help, default])))


def requested_on_command_line(ctx: click.Context, forwarded, values: dict) -> dict[str, dict]:
    """``{stage: {option: value}}`` of the forwarded options given on ``align``'s command line."""
    chosen: dict[str, dict] = {}
    for stage, param, copy in forwarded:
        if ctx.get_parameter_source(copy.name) is ParameterSource.COMMANDLINE:
            chosen.setdefault(stage, {})[param.name] = values[copy.name]
    return chosen


def read_config(ctx: click.Context, path: str, commands: dict, stages: list[str]) -> dict[str, dict]:
    """``{stage: {option: value}}`` from a YAML file, each value converted as its stage's option
    converts the command line's (a list becomes the comma-separated text options like
    ``--speed-perturb`` take). Unknown stages or options are a usage error naming them."""
    import yaml

    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise click.UsageError(f"{path}: expected a mapping of stage -> options, got {type(config).__name__}")
    chosen = {}
    for stage, options in config.items():
        if stage not in stages:
            raise click.UsageError(f"{path}: unknown stage {stage!r}; stages: {', '.join(stages)}")
        params = {p.name: p for p in stage_parameters(commands[stage])}
        chosen[stage] = {}
        for key, value in (options or {}).items():
            name = str(key).replace("-", "_")
            if name not in params:
                raise click.UsageError(f"{path}: stage {stage} has no option {key!r}; "
                                       f"options: {', '.join(sorted(params))}")
            param = params[name]
            if isinstance(value, list) and not param.multiple:
                value = ",".join(str(v) for v in value)
            chosen[stage][name] = param.process_value(ctx, value)
    return chosen


def invoke_stage(ctx: click.Context, command: click.Command, args: list[str], chosen: dict):
    """Run a stage command with its shared ``args`` and the ``chosen`` options (converted values),
    which it sees as given on its command line."""
    sub = command.make_context(command.name, list(args), parent=ctx)
    for name, value in chosen.items():
        sub.params[name] = value
        sub.set_parameter_source(name, ParameterSource.COMMANDLINE)
    with sub:
        return command.invoke(sub)
