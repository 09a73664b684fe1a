"""Click commands of weakalign.pipeline; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

import functools
from pathlib import Path

import click

from .bench import run_benchmarks
from .cli_common import cluster_option, corpus_command, run_stage_command
from .stage import MissingInput


def layout_options(fn):
    """``--recipe`` and ``--audio-root``: how the folder ``--src`` names is laid out (prepare, add-split)."""
    fn = click.option("--audio-root", default=None, type=click.Path(file_okay=False),
                      help="Base of relative wav.scp paths (kaldi recipe) [default: each data dir's parent].")(fn)
    return click.option("--recipe", default=None, type=click.Choice(["an4", "speechocean762", "kaldi", "tedlium2"]),
                        help="Corpus layout [default: the corpus name if it is a recipe, else detected from --src]."
                        )(fn)


@click.command("prepare")
@corpus_command(nj=False)
@click.option("--src", default=None, type=click.Path(file_okay=False),
              help="Corpus directory [default: $WEAKALIGN_CORPORA/<corpus> or <repo>/../shared/corpora/<corpus>].")
@layout_options
@click.option("--max-utts-per-split", default=None,
              help="Take a small slice: N for every split, or e.g. 'train=60,dev=12,test=12'; 'all' for whole splits.")
@click.option("--utts-per-speaker", default=None, type=int,
              help="With a slice: at most this many per speaker (0: no limit).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the dev split and of slices.")
def prepare(ws, force, **options):
    """Corpus -> Lhotse manifests data/<corpus>/manifests/<corpus>_{recordings,supervisions}_<split>.jsonl.gz."""
    from .corpora import prepare as prepare_stage

    run_stage_command("prepare", ws, corpus_checked(prepare_stage), force=force, **options)


def corpus_checked(prepare_stage):
    """``prepare_stage`` that first checks the corpus it will read (``--src``, the recorded one, or
    the default) is there: its absence is one line saying where it was looked for and how to point
    elsewhere. The signature (the stage's options) is the wrapped one."""
    from .corpora import default_source

    @functools.wraps(prepare_stage)
    def checked(ws, *, src=None, **options):
        where = Path(src) if src else default_source(ws.corpus)
        if src and not where.is_dir():
            raise MissingInput(f"corpus {ws.corpus} not found: --src {src} is not a directory")
        if not where.is_dir():
            raise MissingInput(f"corpus {ws.corpus} not found under {where.parent}: set WEAKALIGN_CORPORA "
                               f"to the folder that holds {ws.corpus}/, or give --src")
        return prepare_stage(ws, src=src, **options)

    return checked


@click.command("add-split")
@corpus_command
@click.option("--src", required=True, type=click.Path(file_okay=False),
              help="Folder holding the new split's Kaldi data dir(s), e.g. speechocean762's test half (test/).")
@layout_options
def add_split(ws, force, nj, **options):
    """A new evaluation split (manifests + features) beside a finished workspace, nothing else redone;
    `weakalign score` then decodes it with the trained models."""
    from .add_split import STAGE, add_split as add_split_stage

    summary = run_stage_command(STAGE, ws, add_split_stage, force=force, nj=nj, **options)
    for split, counts in summary["splits"].items():
        click.echo(f"{split}: {counts['utterances']} utterances, {counts['speakers']} speakers, "
                   f"{counts['hours']} h; `weakalign score {ws.corpus} --config <config>` scores it")


@click.command("features")
@corpus_command
@cluster_option
@click.option("--mfcc-storage", type=click.Choice(["kaldi-compressed", "lilcom"]), default="kaldi-compressed",
              show_default=True, help="How the MFCCs are stored: Kaldi compressed matrices, as make_mfcc.sh stores "
                                      "them (the GMMs then train on Kaldi's values), or lilcom (closer to the computed ones).")
def features(ws, force, nj, cluster, mfcc_storage):
    """MFCC (+ per-speaker CMVN) and 80-dim fbank (+ global stats) for every prepared split."""
    from .features import compute_features

    run_stage_command("features", ws, compute_features, force=force, nj=nj, cluster=cluster, mfcc_storage=mfcc_storage)


@click.command("bench")
@corpus_command(force=False)
@click.option("--only", multiple=True, help="Run only these benchmarks (repeatable).")
@click.option("--results-root", default=None,
              help="Parent of published results/<corpus>/ run dirs that time_to_accuracy reads besides exp/.")
def bench(ws, nj, only, results_root):
    """Run the benchmarks; each writes exp/bench/<name>.json."""
    for path in run_benchmarks(ws, nj, tuple(only), results_root=results_root):
        click.echo(path)


COMMANDS: list = [prepare, add_split, features, bench]
