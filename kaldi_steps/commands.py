"""Click commands of this package; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

import click

from ..pipeline.cli_common import cluster_option, corpus_command, run_stage_command, run_stage_command_on_ranks
from ..pipeline.recipe import SOURCE_ALI_DIRS

#: The GMM stages' ``--decode-scoring`` (:func:`~.gmm.decode_wer`; the choices are ``grid_score.SCORINGS``,
#: spelled out so that ``--help`` imports nothing heavy).
DECODE_SCORING = dict(
    type=click.Choice(["kaldi-lattice", "kaldi-nbest", "scales"]), default="kaldi-lattice", show_default=True,
    help="How the WER check picks its scoring point on dev: Kaldi's LM weight x insertion penalty grid scored on "
         "one decode to lattices (as decode.sh + score.sh), or on one decode per LM weight (kaldi-nbest), or the "
         "old search over acoustic scales.")


@click.command("lang")
@corpus_command(nj=False)
@click.option("--lexicon", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Pronunciation lexicon (default: AN4 etc/an4.dic, speechocean762 resource/lexicon.txt, "
                   "else lexicon.txt or *.dic in the corpus source).")
@click.option("--sil-prob", default=0.5, show_default=True, type=float, help="Optional-silence probability in L.")
@click.option("--lm", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ARPA LM for G.fst (default: AN4's etc/an4.ug.lm, else a 3-gram trained on train text).")
@click.option("--lm-order", default=3, show_default=True, type=int, help="Order of the LM trained when none is given.")
def lang(ws, force, **options):
    """Build data/<corpus>/lang (phones, words, L.fst, L_disambig.fst, topo, lm.arpa, G.fst) from a lexicon."""
    from .lang import lang_stage

    run_stage_command("lang", ws, lang_stage, force=force, **options)


@click.command("mono")
@corpus_command
@cluster_option
@click.option("--num-iters", default=40, show_default=True, type=int, help="EM iterations (train_mono.sh).")
@click.option("--total-gauss", default=1000, show_default=True, type=int, help="Target number of Gaussians.")
@click.option("--max-iter-inc", default=30, show_default=True, type=int, help="Last iteration that adds Gaussians.")
@click.option("--beam", default=10.0, show_default=True, type=float, help="Alignment beam (first pass: 6).")
@click.option("--retry-beam", default=40.0, show_default=True, type=float, help="Beam of the retry after a failed alignment.")
@click.option("--decode/--no-decode", default=True, show_default=True, help="Decode test (or dev) for a WER sanity check.")
@click.option("--decode-beam", default=13.0, show_default=True, type=float, help="Decoding beam of the WER check.")
@click.option("--decode-scoring", **DECODE_SCORING)
def mono(ws, force, nj, **options):
    """Train the monophone GMM-HMM on train (exp/<corpus>/mono), as Kaldi's train_mono.sh."""
    from .train_mono import mono_stage

    run_stage_command("mono", ws, mono_stage, force=force, nj=nj, **options)


def triphone_options(script: str):
    """The options tri1 and tri2 share (Kaldi's ``train_deltas.sh`` / ``train_lda_mllt.sh`` have them
    alike): EM schedule, tree thresholds, alignment beams, the WER check."""
    options = [
        click.option("--num-iters", default=35, show_default=True, type=int, help=f"EM iterations ({script})."),
        click.option("--max-iter-inc", default=25, show_default=True, type=int,
                     help="Last iteration that adds Gaussians."),
        click.option("--thresh", default=300.0, show_default=True, type=float,
                     help="Minimum likelihood gain of a tree split."),
        click.option("--cluster-thresh", default=-1.0, show_default=True, type=float,
                     help="Leaf-merging threshold; negative: the smallest split made."),
        click.option("--beam", default=10.0, show_default=True, type=float, help="Alignment beam."),
        click.option("--retry-beam", default=40.0, show_default=True, type=float, help="Retry beam."),
        click.option("--decode/--no-decode", default=True, show_default=True,
                     help="Decode test (or dev) for a WER sanity check."),
        click.option("--decode-beam", default=13.0, show_default=True, type=float,
                     help="Decoding beam of the WER check."),
        click.option("--decode-scoring", **DECODE_SCORING),
    ]

    def decorate(fn):
        for option in reversed(options):  # the first listed ends up first in --help
            fn = option(fn)
        return fn

    return decorate


@click.command("tri1")
@corpus_command
@cluster_option
@click.option("--num-leaves", default=None, type=int, help="Maximum tree leaves [AN4 300, speechocean762 1500].")
@click.option("--total-gauss", default=None, type=int, help="Target Gaussians [AN4 2000, speechocean762 10000].")
@triphone_options("train_deltas.sh")
@click.option("--align-splits", default="train,dev,test", show_default=True, callback=lambda ctx, param, v: _splits(v),
              help="Splits to force-align with the final model into tri1_ali, those the corpus has (train always): "
                   "what the hybrid realigns and export writes. Only train trains the model.")
def tri1(ws, force, nj, **options):
    """Build the tree and train the triphone Δ+ΔΔ system (exp/<corpus>/tri1), then force-align train,
    dev and test with it (exp/<corpus>/tri1_ali), as Kaldi's train_deltas.sh + align_si.sh."""
    from .train_deltas import tri1_stage

    run_stage_command("tri1", ws, tri1_stage, force=force, nj=nj, **options)


def _iters(value: str | None) -> tuple[int, ...] | None:
    """``"2,4,6,12"`` -> ``(2, 4, 6, 12)``; ``""``/``none`` -> ``()`` (MLLT off)."""
    if value is None:
        return None
    if value.strip().lower() in ("", "none", "off"):
        return ()
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated iteration numbers like 2,4,6,12, got {value!r}") from None


@click.command("tri2")
@corpus_command
@cluster_option
@click.option("--num-leaves", default=None, type=int, help="Maximum tree leaves [AN4 300, speechocean762 2000].")
@click.option("--total-gauss", default=None, type=int, help="Target Gaussians [AN4 2000, speechocean762 15000].")
@triphone_options("train_lda_mllt.sh")
@click.option("--mllt-iters", default="2,4,6,12", show_default=True, callback=lambda ctx, param, v: _iters(v),
              help="Iterations that estimate MLLT; 'none' for LDA only.")
@click.option("--lda-dim", default=40, show_default=True, type=int, help="LDA output dimension (est-lda --dim).")
@click.option("--splice-context", default=3, show_default=True, type=int, help="Frames spliced on either side.")
@click.option("--align-splits", default="train,dev,test", show_default=True, callback=lambda ctx, param, v: _splits(v),
              help="Splits to force-align with the final model into tri2_ali, those the corpus has (train always).")
def tri2(ws, force, nj, **options):
    """Train the LDA+MLLT triphone system on tri1's alignments (exp/<corpus>/tri2, a new tree), then
    force-align train, dev and test with it (exp/<corpus>/tri2_ali), as Kaldi's train_lda_mllt.sh.
    Opt-in: `weakalign align` runs it only with --stop-after tri2 or --from tri2."""
    from .train_lda_mllt import tri2_stage

    run_stage_command("tri2", ws, tri2_stage, force=force, nj=nj, **options)


@click.command("tri3")
@corpus_command
@cluster_option
@click.option("--num-leaves", default=None, type=int, help="Maximum tree leaves [AN4 300, speechocean762 2000].")
@click.option("--total-gauss", default=None, type=int, help="Target Gaussians [AN4 2000, speechocean762 15000].")
@triphone_options("train_sat.sh")
@click.option("--fmllr-iters", default="2,4,6,12", show_default=True, callback=lambda ctx, param, v: _iters(v),
              help="Iterations that re-estimate the speakers' fMLLR (besides the first, before the tree); "
                   "'none' for the first only.")
@click.option("--silence-weight", default=0.0, show_default=True, type=float,
              help="Weight of silence frames in the fMLLR statistics (train_sat.sh's).")
@click.option("--align-splits", default="train,dev,test", show_default=True, callback=lambda ctx, param, v: _splits(v),
              help="Splits to align with fMLLR (align_fmllr.sh) into tri3_ali, those the corpus has (train always).")
def tri3(ws, force, nj, **options):
    """Train the speaker-adapted (SAT, fMLLR) triphone system on tri2's alignments and LDA+MLLT features
    (exp/<corpus>/tri3, a new tree, trans.N per-speaker transforms), then align train, dev and test with
    their speakers' fMLLR (exp/<corpus>/tri3_ali), as Kaldi's train_sat.sh + align_fmllr.sh; the WER
    check decodes in two passes (decode_fmllr.sh). Opt-in: `weakalign align` runs it only with
    --stop-after tri3 (after tri2) or --from tri3."""
    from .train_sat import tri3_stage

    run_stage_command("tri3", ws, tri3_stage, force=force, nj=nj, **options)


def _splits(value: str | None) -> tuple[str, ...] | None:
    """``"train,dev,test"`` -> ``("train", "dev", "test")``."""
    if value is None:
        return None
    splits = tuple(s.strip() for s in value.split(",") if s.strip())
    if not splits:
        raise click.BadParameter(f"expected comma-separated split names like train,dev,test, got {value!r}")
    return splits


def _hybrid_default(name: str):
    import inspect

    from .hybrid.stage import hybrid_stage

    return inspect.signature(hybrid_stage).parameters[name].default


def _speed_factors(value: str | None):
    if value is None:
        return None
    if value.strip().lower() in ("", "none", "off"):
        return ()
    try:
        factors = tuple(float(f) for f in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers like 0.9,1.1, got {value!r}") from None
    if any(not 0.5 <= f <= 2.0 for f in factors):
        raise click.BadParameter(f"speed factors must lie in [0.5, 2], got {value!r}")
    return factors


def _cmn_modes() -> list[str]:
    from .hybrid.stage import CMN_MODES

    return list(CMN_MODES)


@click.command("hybrid")
@corpus_command
@cluster_option
@click.option("--device", default="auto", show_default=True, help="Training device: auto, cpu, cuda, cuda:N.")
@click.option("--threads", default=None, type=int,
              help="Training threads [OMP_NUM_THREADS, else every core]; use 1 when the machine is shared.")
@click.option("--procs", default=1, show_default=True, type=int,
              help="Train as DDP on this many local ranks (as torchrun --nproc-per-node would; each with "
                   "cores/procs threads unless --threads or OMP_NUM_THREADS says): on CPU, 2 ranks of 1 thread "
                   "train faster than 1 process of 2 (RESULTS.md). Where the work runs, not part of the request.")
@click.option("--epochs", default=None, type=int, help="Maximum epochs [AN4 8, speechocean762 5].")
@click.option("--passes", default=None, type=int,
              help="Training passes, each on the previous pass's realignment [AN4 2, speechocean762 1].")
@click.option("--warm-start/--no-warm-start", default=False, show_default=True,
              help="Passes 2..N start from the previous pass's network instead of fresh weights, at --lr-final.")
@click.option("--later-epochs", default=None, type=int,
              help="Maximum epochs of passes 2..N [default: --epochs's]; with --warm-start, e.g. 1.")
@click.option("--speed-perturb", default=None, callback=lambda ctx, param, v: _speed_factors(v),
              help="Comma-separated speed factors for extra training copies, e.g. 0.9,1.1; 'none' for off "
                   "[per corpus: hybrid.DEFAULT_SPEED_PERTURB].")
@click.option("--cells", default=_hybrid_default("cells"), show_default=True, type=int, help="LSTM cells per direction.")
@click.option("--proj", default=_hybrid_default("proj"), show_default=True, type=int, help="Recurrent projection size (0: none, so oneDNN runs the LSTM on CPU).")
@click.option("--layers", default=_hybrid_default("layers"), show_default=True, type=int, help="BLSTM layers.")
@click.option("--dropout", default=_hybrid_default("dropout"), show_default=True, type=float)
@click.option("--chunk-width", default=_hybrid_default("chunk_width"), show_default=True, type=int,
              help="Frames per training chunk (the loss is taken on these).")
@click.option("--left-context", default=_hybrid_default("left_context"), show_default=True, type=int,
              help="Extra frames of left context per chunk.")
@click.option("--right-context", default=_hybrid_default("right_context"), show_default=True, type=int,
              help="Extra frames of right context per chunk.")
@click.option("--infer-left-context", default=None, type=int,
              help="Left context per chunk when the network realigns and decodes [default: --left-context].")
@click.option("--infer-right-context", default=None, type=int,
              help="Right context per chunk when the network realigns and decodes [default: --right-context].")
@click.option("--batch-size", default=_hybrid_default("batch_size"), show_default=True, type=int, help="Chunks per minibatch.")
@click.option("--lr", default=_hybrid_default("lr"), show_default=True, type=float, help="Adam learning rate.")
@click.option("--lr-final", default=_hybrid_default("lr_final"), show_default=True, type=float,
              help="Learning rate of the last epoch (geometric decay from --lr).")
@click.option("--cmn", default=_hybrid_default("cmn"), show_default=True, type=click.Choice(_cmn_modes()),
              help="Input normalisation: global CMVN only, or per-speaker mean subtraction first.")
@click.option("--patience", default=_hybrid_default("patience"), show_default=True, type=int,
              help="Epochs without held-out improvement before stopping early.")
@click.option("--heldout-fraction", default=_hybrid_default("heldout_fraction"), show_default=True, type=float,
              help="Share of train utterances (whole speakers) held out for early stopping.")
@click.option("--acoustic-scale", default=_hybrid_default("acoustic_scale"), show_default=True, type=float)
@click.option("--beam", default=_hybrid_default("beam"), show_default=True, type=float, help="Alignment beam.")
@click.option("--retry-beam", default=_hybrid_default("retry_beam"), show_default=True, type=float, help="Retry beam.")
@click.option("--seed", default=_hybrid_default("seed"), show_default=True, type=int)
@click.option("--decode/--no-decode", default=True, show_default=True, help="Decode test (or dev) with the source GMM's HCLG.")
@click.option("--source-ali", default=None, type=click.Choice(list(SOURCE_ALI_DIRS)),
              help="GMM alignments to train on (and that system's tree and HCLG) [per corpus, by the hybrid's "
                   "dev WER: speechocean762 tri3_ali, AN4 and others tri1_ali (pipeline.recipe."
                   "DEFAULT_SOURCE_ALI; RESULTS.md)]. align runs tri2/tri3 "
                   "first when the source needs them.")
def hybrid(ws, force, nj, **options):
    """Train the hybrid BLSTM on the tri1 senone alignments of train (exp/<corpus>/hybrid) and realign
    every split tri1 aligned with it (exp/<corpus>/hybrid_ali: train, dev, test), as Kaldi's nnet3 BLSTM
    recipe + steps/nnet3/align.sh.
    With --passes N, passes 2..N each retrain on the previous realignment (exp/<corpus>/hybrid_pass<k>).
    Rerunning an interrupted stage resumes training from the last epoch's checkpoint.
    Under torchrun (e.g. `torchrun --nproc-per-node 2 .venv/bin/weakalign hybrid an4`) the BLSTM
    trainings run as DDP on every rank; rank 0 alone realigns, decodes and writes. --procs N starts N
    such ranks itself."""
    from .hybrid.stage import hybrid_stage

    run_stage_command_on_ranks("hybrid", ws, hybrid_stage, force=force, nj=nj, **options)


@click.command("kaldi-parity")
@click.argument("ali_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("kaldi_ali_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--lang", "lang_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Lang dir: phones.txt for a dir without one, and the optional silence [default: SIL].")
@click.option("--text", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Kaldi text file (keyed by either dir's utterance ids) naming the words of the "
                   "pronunciation-variant pairs [default: words numbered #1, #2, ...].")
@click.option("--top", default=10, show_default=True, type=int, help="Phone confusions and pronunciation pairs listed.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the JSON report here.")
def kaldi_parity(ali_dir, kaldi_ali_dir, lang_dir, text, top, out):
    """How closely alignment dir ALI_DIR agrees with KALDI_ALI_DIR (e.g. real Kaldi's tri1_ali) over
    the utterances both hold: frame agreement, phone sequences, boundary shifts in ms (positive: the
    Kaldi dir's boundaries are later) and pronunciation variants."""
    from ..pipeline.io import write_json
    from .parity import format_parity_table, kaldi_parity as parity_report

    try:
        report = parity_report(ali_dir, kaldi_ali_dir, lang_dir=lang_dir, text=text, top=top)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    click.echo(format_parity_table(report))
    if out:
        write_json(out, report)
        click.echo(f"(written to {out})")


COMMANDS: list = [lang, mono, tri1, tri2, tri3, hybrid, kaldi_parity]
