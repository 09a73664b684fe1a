"""Click commands of weakalign.pipeline; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

import click

from .bench import run_benchmarks
from .cli_common import corpus_command


@click.command("bench")
@corpus_command
@click.option("--only", multiple=True, help="Run only these benchmarks (repeatable).")
def bench(ws, force, nj, only):
    """Run the benchmarks; each writes exp/bench/<name>.json."""
    for path in run_benchmarks(ws, nj, tuple(only)):
        click.echo(path)


COMMANDS: list = [bench]
