"""Click commands of this package; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

import click

from ..pipeline.cli_common import corpus_command, run_stage_command


@click.command("export")
@corpus_command
@click.option("--ali-dir", default=None, type=click.Path(file_okay=False),
              help="Kaldi alignment dir (final.mdl + ali.*.gz [+ phones.txt]) "
                   "[default: exp/<corpus>/hybrid_ali, else exp/<corpus>/tri1_ali].")
@click.option("--max-frame-diff", default=2, show_default=True, type=int,
              help="Pad/trim alignments at most this many frames off the fbank frame count; skip the rest.")
@click.option("--textgrid/--no-textgrid", "textgrids", default=True, show_default=True,
              help="Write one Praat TextGrid per utterance.")
def export(ws, force, nj, **options):
    """Alignments -> data/<corpus>/cuts_{train,dev}_ali.jsonl.gz (senone/phone arrays, word/phone alignment)."""
    from .export import export_stage

    summary = run_stage_command("export", ws, export_stage, force=force, **options)
    for split, counts in summary.get("splits", {}).items():
        click.echo(f"{split}: {counts['exported']}/{counts['cuts']} cuts exported "
                   f"({counts['no_alignment']} without alignment, {counts['frame_mismatch']} frame mismatches)")
    for split in summary.get("empty_splits", []):
        click.echo(f"{split}: no alignment in {summary['ali_dir']}: {split} not exported")


@click.command("ali-info")
@corpus_command
@click.option("--ali-dir", default=None, type=click.Path(file_okay=False),
              help="Alignment dir [default: as export].")
@click.option("--split", default="train", show_default=True)
@click.option("--top-k", default=10, show_default=True, type=int, help="Most frequent senones to list.")
@click.option("--utt", default=None, help="Utterance to draw [default: the split's first aligned one].")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
def ali_info(ws, force, nj, ali_dir, split, top_k, utt, no_plot):
    """Counts, senone inventory, phone durations, segments lost at 40 ms, and a PNG of one utterance."""
    from .info import alignment_info, format_info

    click.echo(format_info(alignment_info(ws, ali_dir, split=split, top_k=top_k, utt=utt, plot=not no_plot)))


COMMANDS: list = [export, ali_info]
