"""Click commands of this package; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

import click

from ..pipeline.cli_common import corpus_command, run_stage_command
from ..pipeline.io import read_json
from .formats import ALIGNMENT_FILE_FORMATS


@click.command("export")
@corpus_command(nj=False)
@click.option("--ali-dir", default=None, type=click.Path(file_okay=False),
              help="Kaldi alignment dir (final.mdl + ali.*.gz [+ phones.txt]) "
                   "[default: exp/<corpus>/hybrid_ali, else exp/<corpus>/tri1_ali].")
@click.option("--max-frame-diff", default=2, show_default=True, type=int,
              help="Pad/trim alignments at most this many frames off the fbank frame count; skip the rest.")
@click.option("--textgrid/--no-textgrid", "textgrids", default=True, show_default=True,
              help="Write the Praat TextGrids (--no-textgrid also removes an earlier export's).")
@click.option("--textgrid-format", type=click.Choice(ALIGNMENT_FILE_FORMATS), default="long", show_default=True,
              help="Praat's long or short text format (MFA's long_textgrid / short_textgrid), or MFA's json or csv "
                   "output (<recording>.json / .csv in the same folders).")
@click.option("--relative-to", default=None, type=click.Path(file_okay=False),
              help="Write the cuts' paths (audio, fbank, senone/phone arrays) relative to this dir "
                   "[default: absolute]; load with weakalign.align.paths.rebase_cuts(cuts, DIR).")
def export(ws, force, **options):
    """Alignments -> data/<corpus>/cuts_<split>_ali.jsonl.gz (senone/phone arrays, word/phone alignment),
    CTMs and MFA-style TextGrids, for every prepared split with alignments."""
    from .export import export_stage

    summary = run_stage_command("export", ws, export_stage, force=force, **options)
    for split, counts in summary.get("splits", {}).items():
        click.echo(f"{split}: {counts['exported']}/{counts['cuts']} cuts exported "
                   f"({counts['no_alignment']} without alignment, {counts['frame_mismatch']} frame mismatches)")
    for split, n in summary.get("splits_without_alignments", {}).items():
        click.echo(f"{split}: not exported: none of its {n} utterances has an alignment in {summary['ali_dir']}")


@click.command("export-kaldi")
@corpus_command(nj=False)
@click.option("--kaldi-dir", default=None, type=click.Path(file_okay=False),
              help="Where the data dirs go, one per prepared split, plus conf/ [default: data/<corpus>/kaldi].")
def export_kaldi(ws, force, **options):
    """Kaldi data dirs of every prepared split (text, wav.scp, utt2spk, spk2utt, utt2dur, utt2num_frames
    [, segments, spk2gender, utt_map]) and conf/{mfcc,fbank}.conf + cmvn_opts: the features' options."""
    from .kaldi_data import export_kaldi_stage

    summary = run_stage_command("export-kaldi", ws, export_kaldi_stage, force=force, **options)
    for split, counts in summary.get("splits", {}).items():
        click.echo(f"{split}: {counts['utterances']} utterances, {counts['speakers']} speakers -> "
                   f"{summary['kaldi_dir']}/{split} (utterance ids: {summary['utterance_ids']})")


@click.command("ali-info")
@corpus_command(force=False, nj=False)
@click.option("--ali-dir", default=None, type=click.Path(file_okay=False),
              help="Alignment dir [default: as export].")
@click.option("--split", default="train", show_default=True)
@click.option("--top-k", default=10, show_default=True, type=int, help="Most frequent senones to list.")
@click.option("--utt", default=None, help="Utterance to draw [default: the split's first aligned one].")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
def ali_info(ws, ali_dir, split, top_k, utt, no_plot):
    """Counts, senone inventory, phone durations, segments lost at 40 ms, and a PNG of one utterance."""
    from .info import alignment_info, format_info

    click.echo(format_info(alignment_info(ws, ali_dir, split=split, top_k=top_k, utt=utt, plot=not no_plot)))


@click.command("archive-ali")
@corpus_command(force=False, nj=False)
@click.option("--out", "out_root", default=None, type=click.Path(file_okay=False),
              help="Where the archive goes, as <out>/<digest8>/ [default: results/<corpus>/alignment_sets].")
def archive_ali(ws, out_root):
    """Keep the alignment set of the last export (its Kaldi alignment dir + alignment_set.json with
    the digest E2E runs record), so runs can be retrained on the same labels elsewhere:
    `weakalign export CORPUS --ali-dir <out>/<digest8>` restores it."""
    from .archive import MANIFEST, archive_alignment_set

    dest = archive_alignment_set(ws, out_root or f"results/{ws.corpus}/alignment_sets")
    click.echo(f"{dest} ({MANIFEST}: alignment digest {read_json(dest / MANIFEST)['alignment_digest']})")


COMMANDS: list = [export, export_kaldi, ali_info, archive_ali]
