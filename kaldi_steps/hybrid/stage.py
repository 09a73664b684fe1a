"""The ``hybrid`` stage: BLSTM on tri1 senones, then realignment of every split tri1 aligned with it.

Kaldi's nnet3 BLSTM recipe + ``steps/nnet3/align.sh`` in one stage:

1. targets: the tri1 alignments (``exp/<c>/tri1_ali``) mapped transition-id -> pdf-id,
   reconciled to the fbank frame count (:func:`.train.reconcile_frames`);
2. priors from the train pdf counts (:mod:`.priors`) -> ``exp/<c>/hybrid/priors.npy``;
3. the BLSTM (:mod:`.model`) trained with frame CE on chunks, early-stopped on a
   few % of the train speakers held out (:mod:`.train`) -> ``exp/<c>/hybrid/final.pt``;
   with ``speed_perturb`` factors, 0.9x/1.1x copies of the train utterances join the training
   set (:func:`speed_perturbed_fbank`, computed once for all passes) and the default epoch budget shrinks to keep the frames
   seen constant (:func:`default_epochs`);
4. realignment of every utterance the source aligned -- train, dev and the evaluation splits
   (test; those ``tri1_ali/utt2split`` names beyond train and dev) -- over its training graph with
   ``0.1 * (log-posterior - log-prior)`` pseudo-likelihoods (:mod:`.realign`) ->
   ``exp/<c>/hybrid_ali/`` in the GMM stage's Kaldi format (same model, tree, job split and
   ``utt2split`` as ``tri1_ali``). Only train's alignments are trained on (held-out train
   speakers select the epoch); frame accuracy is reported per split (``frame_acc_dev``,
   ``frame_acc_test``), never pooled across them. A checkpoint names the train and dev
   targets it was trained on (:func:`training_targets_digest`), so a rerun caused by test
   alignments alone resumes the finished training instead of repeating it;
5. a decode of the test split (dev when there is none) with the tri1 HCLG, and the report
   ``exp/<c>/hybrid/{diagnostics.json,RESULTS.md}``: the network scores each split once, into
   one Kaldi archive per job, and ``nj`` Dask jobs decode them (:mod:`~weakalign.kaldi_steps.mapped_decode`, as
   ``nnet-forward | latgen-faster-mapped``);
6. with ``passes`` > 1, steps 1-5 again on the previous pass's realignment instead of tri1's
   (``hybrid_pass<k>/`` and ``hybrid_ali_pass<k>/`` hold the earlier passes). On AN4 a first
   pass deletes words at junctions of similar syllables (E after /IY/, EIGHT EIGHT) that tri1's
   segmentation taught it; retrained on its own realignment it deletes a third to a half as often.

Python: ``hybrid_stage(ws, nj=2, device="auto", epochs=None, passes=None, speed_perturb=None, ...)``
(``None``: the per-corpus :data:`DEFAULT_EPOCHS`, :data:`DEFAULT_PASSES`, :data:`DEFAULT_SPEED_PERTURB`);
CLI: ``weakalign hybrid an4 [--passes N] [--speed-perturb 0.9,1.1|none]``.

Under ``torchrun`` (``torchrun --nproc-per-node N weakalign hybrid an4``; README "Several machines")
every rank trains each pass (DDP, :func:`.train.train_hybrid`); rank 0 alone writes the priors,
realigns, decodes and reports, and the other ranks wait for it at the end of each pass
(:func:`weakalign.pipeline.distributed.wait_for_rank0`), then read its outputs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm

from weakalign.align.loader import stretch_labels
from weakalign.pipeline.acoustic_features import (apply_cmvn, cmvn_stats, mean_std_from_stats,
                                                  speaker_cmvn_stats)
from weakalign.pipeline.distributed import wait_for_rank0, world
from weakalign.pipeline.io import atomic_open, atomic_path, read_json, write_json
from weakalign.pipeline.options import content_digest, declares_inputs, resolves_defaults
from weakalign.pipeline.recipe import SOURCE_ALI_DIRS, default_source_ali, source_stage_of
from weakalign.pipeline.report import SkipReport
from weakalign.pipeline.workspace import Workspace

from ..shard import TrainingGraphs
from . import realign as ha
from .model import HybridConfig
from .train import (FrameMismatch, TrainConfig, default_threads, heldout_split, load_model, reconcile_frames,
                    resolve_device, train_hybrid)
from .priors import pdf_counts, priors_from_counts, save_priors

log = logging.getLogger("weakalign")

HYBRID_DIR = "hybrid"
HYBRID_ALI_DIR = "hybrid_ali"
CMN_MODES = ("global", "speaker")
#: Epoch budget per corpus when ``epochs`` is not given: speechocean762 has ~4.4x AN4's frames, so
#: fewer epochs keep its hybrid stage under an hour on 2 CPU cores.
DEFAULT_EPOCHS = {"an4": 8, "speechocean762": 5}
#: Acoustic scales tried on dev when decoding. Higher than the GMM's range: prior-divided network
#: posteriors are flatter than GMM likelihoods (on AN4 the best dev scale was 0.1-0.125; 0.05, 0.2
#: and 0.3 never won and cost a decode each, minutes on speechocean762's graph).
DECODE_SCALES = (0.0833, 0.1, 0.125, 0.15)
#: Speed-perturbation factors (besides 1.0) for the hybrid's training data per corpus.
DEFAULT_SPEED_PERTURB: dict[str, tuple[float, ...]] = {"an4": (0.9, 1.1)}
#: Training passes per corpus when ``passes`` is not given (pass k trains on pass k-1's realignment).
DEFAULT_PASSES = {"an4": 2, "speechocean762": 1}


def load_fbank(ws: Workspace, split: str, cmn: str = "global") -> dict[str, tuple[np.ndarray, str, str]]:
    """``utt_id -> (fbank (T, 80) float32, speaker, text)`` of one split (cut id = utterance id).

    ``cmn="speaker"`` subtracts each speaker's mean over the split, as Kaldi's ``apply-cmvn --utt2spk``
    with ``norm_vars=false`` (it removes the channel and speaker offset a small corpus cannot average
    out); ``"global"`` leaves the features as stored (the model applies the global CMVN itself).
    """
    if cmn not in CMN_MODES:
        raise ValueError(f"cmn must be one of {CMN_MODES}, got {cmn!r}")
    out = {}
    cuts = CutSet.from_file(ws.fbank_cuts(split))
    for cut in tqdm(cuts, desc=f"load fbank {split}", leave=False):
        sup = cut.supervisions[0]
        out[cut.id] = (cut.load_features().astype(np.float32), sup.speaker or cut.id, sup.text or "")
    if cmn == "speaker":
        stats = speaker_cmvn_stats((spk, x) for x, spk, _ in out.values())
        out = {u: (apply_cmvn(x, stats[spk]).astype(np.float32), spk, text) for u, (x, spk, text) in out.items()}
    return out


def feature_stats(feats) -> dict:
    """Global mean/std of ``(T, D)`` arrays, the form of ``data/<c>/fbank/global_cmvn.json``."""
    return mean_std_from_stats(sum(cmvn_stats(x) for x in feats))


def pdf_targets(feats: dict, alignments: dict[str, np.ndarray], tid2pdf: np.ndarray,
                report: SkipReport, max_mismatch: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``utt -> (fbank, pdf-ids)`` for utterances with a usable alignment; the others are reported."""
    out = {}
    for utt, (x, _, _) in feats.items():
        if utt not in alignments:
            report.skip(utt, "no tri1 alignment")
            continue
        try:
            pdfs = reconcile_frames(utt, tid2pdf[alignments[utt]], len(x), max_mismatch)
        except FrameMismatch as e:
            report.skip(utt, f"frame mismatch: {e}")
            continue
        out[utt] = (x, pdfs.astype(np.int64))
    return out


def speed_perturbed_fbank(ws: Workspace, utt_ids, factors, cmn: str) -> dict[str, tuple[np.ndarray, str, float]]:
    """Kaldi's speed perturbation (``perturb_data_dir_speed_3way.sh``) of train utterances' fbank.

    Each utterance in ``utt_ids`` is resampled at every factor other than 1 (Lhotse ``perturb_speed``:
    pitch and tempo both change, as sox ``speed`` does) and its fbank computed as the features stage
    computes it. Copies are named ``sp<f>-<utt>`` and belong to speaker ``sp<f>-<spk>``, so speaker
    mean normalisation treats them as the new speakers they sound like. Returns
    ``copy_id -> (fbank, original utt_id, factor)``; :func:`speed_perturbed_targets` labels them.
    """
    from weakalign.pipeline.acoustic_features import KnfFbank, sphere_readable

    factors = [float(f) for f in factors if float(f) != 1.0]
    if not factors:
        return {}
    wanted = set(utt_ids)
    cuts = CutSet.from_cuts(c for c in CutSet.from_file(ws.fbank_cuts("train")) if c.id in wanted)
    extractor = KnfFbank()
    copies: dict[str, tuple[np.ndarray, str, str, float]] = {}
    with sphere_readable([cuts]):
        for factor in factors:
            for cut in tqdm(cuts, desc=f"speed {factor:g} fbank", leave=False):
                fast = cut.drop_features().perturb_speed(factor)
                x = extractor.extract(fast.load_audio(), fast.sampling_rate)
                spk = f"sp{factor:g}-{cut.supervisions[0].speaker or cut.id}"
                copies[f"sp{factor:g}-{cut.id}"] = (x, spk, cut.id, factor)
    if cmn == "speaker":
        stats = speaker_cmvn_stats((spk, x) for x, spk, _, _ in copies.values())
        copies = {c: (apply_cmvn(x, stats[spk]), spk, u, f) for c, (x, spk, u, f) in copies.items()}
    return {c: (x.astype(np.float32), u, f) for c, (x, _, u, f) in copies.items()}


def speed_perturbed_targets(perturbed: dict[str, tuple[np.ndarray, str, float]],
                            targets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``copy_id -> (fbank, pdf-ids)`` for the copies of utterances in ``targets``, their labels
    stretched from the original's with :func:`weakalign.align.loader.stretch_labels`."""
    return {c: (x, stretch_labels(targets[u][1], len(x), f))
            for c, (x, u, f) in perturbed.items() if u in targets}


@dataclass
class HybridInputs:
    """What every pass trains and realigns on, read once per stage: fbank of train and dev
    (``utt -> (fbank, speaker, text)``), the network's input CMVN, speed-perturbed train fbank, and
    the fbank of the evaluation splits (``split -> utt -> (fbank, speaker, text)``), realigned only."""

    train: dict[str, tuple[np.ndarray, str, str]]
    dev: dict[str, tuple[np.ndarray, str, str]]
    cmvn: dict
    perturbed: dict[str, tuple[np.ndarray, str, float]]
    evaluation: dict[str, dict[str, tuple[np.ndarray, str, str]]] = field(default_factory=dict)

    @staticmethod
    def load(ws: Workspace, cmn: str, speed_perturb, evaluation_splits=()) -> "HybridInputs":
        train = load_fbank(ws, "train", cmn)
        dev = load_fbank(ws, "dev", cmn) if ws.fbank_cuts("dev").exists() else {}
        # The stored global CMVN describes raw fbank; after speaker mean subtraction it is recomputed.
        cmvn = read_json(ws.fbank_stats) if cmn == "global" else feature_stats(x for x, _, _ in train.values())
        evaluation = {split: load_fbank(ws, split, cmn) for split in evaluation_splits}
        return HybridInputs(train, dev, cmvn, speed_perturbed_fbank(ws, train, speed_perturb, cmn), evaluation)

    def by_split(self) -> dict[str, dict[str, tuple[np.ndarray, str, str]]]:
        """``split -> utt -> (fbank, speaker, text)``: train, dev, then the evaluation splits."""
        return {"train": self.train, "dev": self.dev, **self.evaluation}


#: The splits the hybrid trains on (train) and reports on beside it (dev); every other split the
#: source aligned is an evaluation split: realigned for export, never trained or selected on.
TRAINING_SPLITS = ("train", "dev")


def evaluation_splits(ws: Workspace, ali_dir: Path) -> list[str]:
    """The splits beyond train and dev that ``ali_dir/utt2split`` names and that have fbank, in
    the workspace's split order (none for an alignment dir without ``utt2split``)."""
    from ..train_deltas import read_utt2split

    named = set(read_utt2split(ali_dir).values()) - set(TRAINING_SPLITS)
    return [s for s in ws.available_splits() if s in named and ws.fbank_cuts(s).exists()]


def training_targets_digest(alignments: dict[str, np.ndarray], inputs: HybridInputs) -> str:
    """:func:`alignment_digest` of the train and dev utterances' alignments only: what names a
    pass's training targets for checkpoint resumption. Test alignments leave it unchanged, so
    aligning test as well does not retrain a finished BLSTM (and a checkpoint from before test
    was aligned, when the source held train and dev only, still resumes)."""
    return alignment_digest({u: a for u, a in alignments.items() if u in inputs.train or u in inputs.dev})


def _job_split(ali_dir: Path) -> list[list[str]]:
    """The utterance ids of each ``ali.N.gz`` of a GMM alignment dir, so the hybrid dir mirrors it."""
    from ..kaldi_io import iter_ali_archive

    nj = int((ali_dir / "num_jobs").read_text().split()[0])
    return [[utt for utt, _ in iter_ali_archive(ali_dir / f"ali.{j}.gz")] for j in range(1, nj + 1)]


def write_hybrid_ali(out_dir: Path, src_ali_dir: Path, alignments: dict[str, np.ndarray]) -> list[Path]:
    """Write ``hybrid_ali`` in the layout of ``src_ali_dir``: same model, tree, files and job split."""
    from ..kaldi_io import write_ali_archive

    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = _job_split(src_ali_dir)
    placed = {u for job in jobs for u in job}
    extra = sorted(set(alignments) - placed)
    if extra:  # cannot happen when we only realign what tri1 aligned; keep them anyway
        jobs[-1].extend(extra)
    written = []
    for j, utts in enumerate(jobs, start=1):
        path = out_dir / f"ali.{j}.gz"
        write_ali_archive(path, ((u, alignments[u]) for u in utts if u in alignments))
        written.append(path)
    for name in sorted(p.name for p in src_ali_dir.iterdir()):
        if _describes_alignments(name):
            with atomic_path(out_dir / name) as tmp:
                shutil.copyfile(src_ali_dir / name, tmp)
            written.append(out_dir / name)
    return written


def _describes_alignments(name: str) -> bool:
    """Files of a GMM alignment dir copied as they are: model, tree, phones, job and split lists."""
    return not name.startswith(("ali.", ".")) and name not in ("diagnostics.json", "log")


#: Options that change where a pass runs, not what it produces (never in its stamp).
WHERE_IT_RUNS = ("nj", "cluster", "device", "threads")


#: The options that set the context the network sees when it realigns and decodes, apart from training's.
_INFER_CONTEXT = ("infer_left_context", "infer_right_context")
#: The options :func:`inference_chunking` reads.
INFERENCE_CHUNKING = ("chunk_width", "left_context", "right_context", *_INFER_CONTEXT)


def inference_chunking(chunk_width: int, left_context: int, right_context: int,
                       infer_left_context: int | None = None, infer_right_context: int | None = None) -> TrainConfig:
    """The chunks a network trained with ``left_context``/``right_context`` is run on when it realigns
    and decodes: the same width, ``infer_*_context`` frames of context where set, else the training's."""
    return TrainConfig(chunk_width=chunk_width,
                       left_context=left_context if infer_left_context is None else infer_left_context,
                       right_context=right_context if infer_right_context is None else infer_right_context)


@dataclass(frozen=True)
class PassOptions:
    """What one pass is asked to do: the network and its training, the realignment, the WER check,
    and where it runs (:data:`WHERE_IT_RUNS`). All but the last are the pass's identity (its stamp).
    The stage's options (:func:`hybrid_stage`) hold the same fields; :meth:`for_pass` derives pass k's."""

    epochs: int
    cells: int
    proj: int
    layers: int
    dropout: float
    chunk_width: int
    left_context: int
    right_context: int
    infer_left_context: int | None
    infer_right_context: int | None
    batch_size: int
    lr: float
    lr_final: float | None
    patience: int
    heldout_fraction: float
    cmn: str
    speed_perturb: list[float]
    acoustic_scale: float
    beam: float
    retry_beam: float
    prior_floor: float
    max_mismatch: int
    seed: int
    decode: bool
    nj: int
    cluster: str | None
    device: str
    threads: int | None

    def identity(self) -> dict:
        """The options that decide what the pass produces (the stamp's ``options``). The inference
        contexts count only when set: at ``None`` the pass is the one stamped before they existed."""
        return {o: v for o, v in asdict(self).items()
                if o not in WHERE_IT_RUNS and not (o in _INFER_CONTEXT and v is None)}

    def for_pass(self, k: int, later_epochs: int | None, warm_started: bool) -> PassOptions:
        """Pass ``k``'s options: passes 2..N train for ``later_epochs`` (default: the stage's epochs); a
        warm-started pass fine-tunes at the rate the previous pass ended on.

        >>> o = PassOptions(**{**dict.fromkeys(PassOptions.__dataclass_fields__), "epochs": 3, "lr": 2e-3,
        ...                    "lr_final": 2e-4})
        >>> p = o.for_pass(2, later_epochs=1, warm_started=True)
        >>> p.epochs, p.lr, p.lr_final, o.for_pass(1, later_epochs=1, warm_started=True).epochs
        (1, 0.0002, 0.0002, 3)
        """
        options = replace(self, epochs=self.epochs if k == 1 else later_epochs or self.epochs)
        if warm_started and self.lr_final is not None:
            # Fine-tuning goes on where the previous pass's schedule ended: at lr 2e-3, a fresh run's
            # first rate, one epoch undid pass 1 on AN4 (held-out acc. 0.748, test WER 12.94; RESULTS.md).
            options = replace(options, lr=self.lr_final)
        return options

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, lr_final=self.lr_final,
                           patience=self.patience, chunk_width=self.chunk_width, left_context=self.left_context,
                           right_context=self.right_context, seed=self.seed,
                           device=str(resolve_device(self.device)), threads=self.threads)

    def infer_config(self) -> TrainConfig:
        """The chunking the network realigns and decodes with: the training's chunk width, with
        ``infer_left_context``/``infer_right_context`` frames of context where set (Kaldi's decoding
        ``extra-left-context``/``extra-right-context``), else the training's.

        >>> o = PassOptions(**{**dict.fromkeys(PassOptions.__dataclass_fields__), "chunk_width": 40,
        ...                    "left_context": 10, "right_context": 10, "infer_left_context": 20})
        >>> c = o.infer_config(); c.chunk_width, c.left_context, c.right_context
        (40, 20, 10)
        >>> "infer_right_context" in o.identity(), o.identity()["infer_left_context"]
        (False, 20)
        """
        return inference_chunking(**{o: getattr(self, o) for o in INFERENCE_CHUNKING})

    def model_config(self, num_pdfs: int, feat_dim: int) -> HybridConfig:
        return HybridConfig(num_pdfs=num_pdfs, feat_dim=feat_dim, cells=self.cells, proj=self.proj,
                            layers=self.layers, dropout=self.dropout, input_cmn=self.cmn)


def decoding_graph(ws: Workspace, gmm_dir: Path) -> Path:
    """The dir of the HCLG the hybrid decodes with: its GMM system's graph, else one built for it
    once under ``exp/<c>/hybrid/graph_tri1`` (a GMM stage run without its WER check has none)."""
    from ..graph import make_graph

    graph_dir = gmm_dir / "graph"
    if not (graph_dir / "HCLG.fst").exists():
        graph_dir = ws.exp / HYBRID_DIR / "graph_tri1"
        if not (graph_dir / "HCLG.fst").exists():
            make_graph(ws.lang, gmm_dir, graph_dir)
    return graph_dir


#: Utterances whose chunks the network scores in one batch when it realigns and decodes
#: (:meth:`~.model.HybridBLSTM.utterances_log_probs`): of 1, 4, 8, 16 and 32 AN4 dev utterances at a
#: time, 8 ran fastest at 1 thread (1.33-1.43x one at a time; ``results/an4/hybrid_speed/session26/``).
FORWARD_BLOCK = 8


def blocked_log_probs(model, cfg: TrainConfig, feats: dict, block: int = FORWARD_BLOCK):
    """``(utt, log-posteriors (T, num_pdfs))`` of the network over ``feats`` (``utt -> (fbank, ...)``),
    in their order, chunked as ``cfg`` says, ``block`` utterances per forward pass."""
    utts = list(feats)
    for start in range(0, len(utts), block):
        group = utts[start:start + block]
        log_probs = model.utterances_log_probs([torch.from_numpy(feats[u][0]) for u in group], cfg.chunk_width,
                                               cfg.left_context, cfg.right_context)
        yield from zip(group, (lp.numpy() for lp in log_probs))


def likelihood_ratios(model, cfg: TrainConfig, log_priors: np.ndarray, feats: dict, desc: str = "hybrid forward"
                      ) -> dict[str, np.ndarray]:
    """``utt -> log p(pdf | x) - log p(pdf)`` of the network over ``feats`` (:func:`load_fbank`'s),
    unscaled: each decode applies its own acoustic scale."""
    return {u: ha.pseudo_log_likelihoods(lp, log_priors, 1.0)
            for u, lp in tqdm(blocked_log_probs(model, cfg, feats), total=len(feats), desc=desc, leave=False)}


def _decode_wer(ws: Workspace, model, cfg: TrainConfig, log_priors: np.ndarray, trans_model,
                gmm_dir: Path, scales=None, scoring: str = "kaldi-lattice", grid=None, nj: int = 1,
                cluster: str | None = None, scratch: Path | None = None) -> dict:
    """WER of the hybrid with the source GMM's HCLG, scored as the GMM stages score theirs
    (:func:`~weakalign.kaldi_steps.gmm.decode_wer`): ``scoring="kaldi-lattice"`` (default) picks
    Kaldi's ``score.sh`` LM weight x insertion penalty point on dev from the lattices of one decode of
    the prior-divided log-likelihoods (``"kaldi-nbest"``: from one decode per decoded LM weight),
    then decodes the test split (dev if none) once at it.
    The network scores each split here, into one archive per job under ``scratch`` (removed after),
    and ``nj`` Dask jobs on ``cluster`` decode them (:mod:`~weakalign.kaldi_steps.mapped_decode`).
    ``scoring="scales"``: the old search over acoustic ``scales``, no penalty, in this process."""
    from ..grid_score import scoring_grid

    grid = scoring_grid(scoring, grid)
    graph_dir = decoding_graph(ws, gmm_dir)

    def split_ratios(split: str) -> tuple[dict, dict]:
        """References and unscaled log-likelihood ratios (computed once, scaled per decode)."""
        feats = load_fbank(ws, split, model.config.input_cmn)
        refs = {u: t.split() for u, (_, _, t) in feats.items()}
        return refs, likelihood_ratios(model, cfg, log_priors, feats, f"hybrid forward {split}")

    wer_set = "test" if ws.fbank_cuts("test").exists() else "dev"
    has_dev = ws.fbank_cuts("dev").exists()
    if grid is not None:
        scratch = Path(scratch or ws.exp / HYBRID_DIR / "decode_scratch")
        return _grid_wer(split_ratios, wer_set, has_dev, trans_model, graph_dir, grid, nj, cluster, scratch)
    return _scales_wer(split_ratios, wer_set, has_dev, trans_model, graph_dir, scales)


def _grid_wer(split_ratios, wer_set: str, has_dev: bool, trans_model, graph_dir: Path, grid, nj: int,
              cluster: str | None, scratch: Path) -> dict:
    """Kaldi's grid: the LM weight and penalty picked on dev's paths (``grid.method``), the test split
    decoded once at it."""
    from ..execution import Executor
    from ..graph import _word_table, compute_wer, word_strings
    from ..grid_score import grid_dev_wers, grid_result
    from ..mapped_decode import decode_point_in_jobs, grid_candidates_in_jobs, write_loglike_arks

    table = _word_table(graph_dir / "words.txt")
    shutil.rmtree(scratch, ignore_errors=True)   # a killed run's archives: never reused

    def split_arks(split: str):
        refs, ratios = split_ratios(split)
        return (refs, *write_loglike_arks(ratios, scratch / split, nj))

    w, p, dev = 10, 0.0, {}   # without dev: Kaldi's acoustic scale 0.1, no penalty
    try:
        with Executor(nj, cluster, shared=(scratch.parent,)) as executor:
            if has_dev:
                refs, arks, order = split_arks("dev")
                candidates = grid_candidates_in_jobs(arks, order, graph_dir / "HCLG.fst", trans_model, grid, executor)
                dev, (w, p) = grid_dev_wers(refs, candidates, grid, table)
            if wer_set == "dev":
                result = dev[(w, p)]
            else:
                refs, arks, order = split_arks(wer_set)
                hyps = decode_point_in_jobs(arks, order, graph_dir / "HCLG.fst", trans_model, w, p, executor)
                result = compute_wer(refs, {u: word_strings(table, ids) for u, ids in hyps.items()})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**grid_result(result, grid, (w, p), dev), "wer_set": wer_set, "graph": str(graph_dir)}


def _scales_wer(split_ratios, wer_set: str, has_dev: bool, trans_model, graph_dir: Path, scales) -> dict:
    """The old search: the acoustic scale picked on dev among ``scales``, no penalty, in this process."""
    import kaldifst

    from ..graph import compute_wer, decode_set

    scales = tuple(scales or DECODE_SCALES)
    hclg = kaldifst.StdVectorFst.read(str(graph_dir / "HCLG.fst"))
    words = graph_dir / "words.txt"

    def decode(split: str, split_scales) -> dict[float, dict]:
        refs, ratios = split_ratios(split)
        out = {}
        for scale in split_scales:
            hyps = ha.decode_hybrid(hclg, ((u, scale * r) for u, r in ratios.items()), trans_model, words,
                                    decode_set, acoustic_scale=scale, progress=False)
            out[scale] = compute_wer(refs, hyps)
            log.info("hybrid: decode %s at acoustic scale %.4g: WER %.2f%%", split, scale, out[scale]["wer"])
        return out

    dev = decode("dev", scales) if has_dev else {}
    best = min(scales, key=lambda s: (dev[s]["wer"], s)) if dev else 0.1
    result = dev[best] if wer_set == "dev" else decode(wer_set, [best])[best]
    return {**result, "wer_set": wer_set, "scoring": "scales", "acoustic_scale": best, "graph": str(graph_dir),
            "dev_wer": {str(s): dev[s]["wer"] for s in dev}}


@dataclass
class LoadedPass:
    """What a finished pass's WER check needs, read back from its dir (:func:`load_finished_pass`)."""
    model: torch.nn.Module
    train_config: TrainConfig
    log_priors: np.ndarray
    trans_model: object
    gmm_dir: Path
    diagnostics: dict


def load_finished_pass(ws: Workspace, pass_dir: Path, device: str = "cpu") -> LoadedPass:
    """The network (in eval mode), context, log-priors and source GMM of the pass in ``pass_dir``
    (``exp/<c>/hybrid`` or a ``hybrid_pass<k>``), so its decode can be run again:
    ``_decode_wer(ws, p.model, p.train_config, p.log_priors, p.trans_model, p.gmm_dir)``."""
    from ..kaldi_io import read_model

    diag = read_json(Path(pass_dir) / "diagnostics.json")
    gmm_dir = ws.exp / (diag.get("gmm") or "tri1")
    cfg = diag["train_config"]
    left, right = diag.get("infer_context") or (cfg["left_context"], cfg["right_context"])
    return LoadedPass(
        model=load_model(Path(pass_dir) / "final.pt", device).eval(),
        train_config=TrainConfig(chunk_width=cfg["chunk_width"], left_context=left, right_context=right),
        log_priors=np.log(np.load(Path(pass_dir) / "priors.npy")).astype(np.float32),
        trans_model=read_model(gmm_dir / "final.mdl")[0], gmm_dir=gmm_dir, diagnostics=diag)


def source_ali_input(ws: Workspace, options: dict) -> dict:
    """The hybrid's declared input when it trains on another GMM system than tri1 (``source_ali``,
    else the corpus's :func:`default_source_ali`): that dir's alignments' content, so that redoing
    tri2/tri3 redoes the hybrid trained on them (the recipe's graph says tri1 only). Nothing for
    tri1_ali: its staleness is the graph's, and markers written before this option match."""
    source = options.get("source_ali") or default_source_ali(ws.corpus)
    if source == "tri1_ali":
        return {}
    alis = sorted((ws.exp / source).glob("ali.*.gz"))
    return {"source_ali": f"{source} {content_digest(alis, gunzip=True)}" if alis else f"{source} (missing)"}


def hybrid_defaults(ws: Workspace, options: dict) -> dict:
    """What the corpus-dependent options are when not given (``None``): the source alignments
    (:func:`~weakalign.pipeline.recipe.default_source_ali`), :data:`DEFAULT_PASSES`,
    :data:`DEFAULT_SPEED_PERTURB` (factors sorted, 1.0 left out: the original data is always
    there) and :func:`default_epochs` for them.

    >>> hybrid_defaults(type("Ws", (), {"corpus": "an4"}), {"passes": 1})
    {'source_ali': 'tri1_ali', 'passes': 1, 'speed_perturb': [0.9, 1.1], 'epochs': 3}
    """
    factors = options.get("speed_perturb")
    factors = DEFAULT_SPEED_PERTURB.get(ws.corpus, ()) if factors is None else factors
    speed_perturb = sorted({float(f) for f in factors} - {1.0})
    return {"source_ali": options.get("source_ali") or default_source_ali(ws.corpus),
            "passes": options.get("passes") or DEFAULT_PASSES.get(ws.corpus, 1),
            "speed_perturb": speed_perturb,
            "epochs": options.get("epochs") or default_epochs(ws.corpus, speed_perturb)}


@declares_inputs(source_ali_input)
@resolves_defaults(hybrid_defaults)
def hybrid_stage(ws: Workspace, nj: int = 2, cluster: str | None = None, device: str = "auto",
                 epochs: int | None = None,
                 passes: int | None = None,
                 cells: int = 192, proj: int = 0, layers: int = 3, dropout: float = 0.1,
                 chunk_width: int = 40, left_context: int = 20, right_context: int = 20,
                 infer_left_context: int | None = None, infer_right_context: int | None = None,
                 batch_size: int = 32, lr: float = 2e-3, lr_final: float | None = 2e-4, patience: int = 2,
                 heldout_fraction: float = 0.05, cmn: str = "speaker",
                 speed_perturb: tuple[float, ...] | None = None,
                 acoustic_scale: float = 0.1, beam: float = 10.0, retry_beam: float = 40.0,
                 prior_floor: float = 1e-5, max_mismatch: int = 2, seed: int = 0, decode: bool = True,
                 threads: int | None = None,
                 source_ali: str | None = None, warm_start: bool = False, later_epochs: int | None = None) -> dict:
    """Train the hybrid BLSTM on the train alignments of ``exp/<c>/<source_ali>`` and realign every
    split it holds (train, dev, test) into ``hybrid_ali``. The realignment and the WER check's decode
    run in ``nj`` jobs on ``cluster`` (a Dask scheduler's address or a queue, as the GMM stages'; None:
    a local cluster of ``nj`` processes; :mod:`~weakalign.kaldi_steps.execution`), the training here.

    ``source_ali`` (``--source-ali``, one of :data:`SOURCE_ALI_DIRS`; ``None``: the corpus's
    :func:`default_source_ali`) sets both: the alignments of
    ``exp/<c>/<source_ali>`` and the model, tree and HCLG of the GMM system that made them
    (``tri3_ali`` -> ``tri3``). The BLSTM reads fbank, so a tri2/tri3 source changes only the targets
    (its tree and segmentation), not the network's input.

    With ``passes`` > 1 (``None``: :data:`DEFAULT_PASSES`), pass k trains a fresh BLSTM on the
    realignment of pass k-1, as Kaldi recipes realign before training a bigger system; pass k < last
    writes ``hybrid_pass<k>/`` and ``hybrid_ali_pass<k>/``, the last pass ``hybrid/`` and ``hybrid_ali/``.
    A finished earlier pass (its ``diagnostics.json`` names the same options and source alignments)
    is reused on a rerun. ``warm_start``: pass k > 1 starts from pass k-1's weights instead of fresh
    ones, at the rate the previous pass ended on (``lr_final``, constant); ``later_epochs``: the epoch
    budget of passes 2..N (default: ``epochs``), e.g. one epoch to adapt a warm-started network to the
    new targets (issue #17: fewer frames for the stage).

    ``infer_left_context``/``infer_right_context`` (``None``: ``left_context``/``right_context``): the
    context each chunk is seen with when the network realigns and decodes, as Kaldi decodes with its
    own ``extra-left-context``: a network trained on short context may still use more of it there.
    """
    resolved = hybrid_defaults(ws, dict(source_ali=source_ali, passes=passes, speed_perturb=speed_perturb,
                                        epochs=epochs))
    source_ali, passes, speed_perturb = resolved["source_ali"], resolved["passes"], resolved["speed_perturb"]
    if source_ali not in SOURCE_ALI_DIRS:
        raise ValueError(f"source_ali must be one of {', '.join(SOURCE_ALI_DIRS)}, got {source_ali!r}")
    src_ali_dir, gmm_dir = source_ali, source_stage_of(source_ali)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if any(c is not None and c < 0 for c in (infer_left_context, infer_right_context)):
        raise ValueError(f"infer contexts must be >= 0, got {infer_left_context}/{infer_right_context}")
    options = PassOptions(
        epochs=resolved["epochs"], cells=cells, proj=proj, layers=layers,
        dropout=dropout, chunk_width=chunk_width, left_context=left_context, right_context=right_context,
        infer_left_context=infer_left_context, infer_right_context=infer_right_context,
        batch_size=batch_size, lr=lr, lr_final=lr_final, patience=patience, heldout_fraction=heldout_fraction,
        cmn=cmn, speed_perturb=speed_perturb, acoustic_scale=acoustic_scale, beam=beam, retry_beam=retry_beam,
        prior_floor=prior_floor, max_mismatch=max_mismatch, seed=seed, decode=decode, device=device, nj=nj,
        cluster=cluster, threads=threads)
    from ..kaldi_io import read_ali_dir

    t0 = time.time()
    source = ws.exp / src_ali_dir
    inputs = HybridInputs.load(ws, cmn, speed_perturb, evaluation_splits(ws, source))
    log.info("hybrid: fbank of %d train + %d dev utterances%s and %d speed-perturbed copies in %.1f s",
             len(inputs.train), len(inputs.dev),
             "".join(f" + {len(f)} {s}" for s, f in inputs.evaluation.items()), len(inputs.perturbed),
             time.time() - t0)
    reference = read_ali_dir(source)   # agreement is always reported against the GMM alignments
    alignments = reference
    summaries, previous_out = [], None
    for k in range(1, passes + 1):
        last = k == passes
        out_dir = ws.exp / (HYBRID_DIR if last else f"{HYBRID_DIR}_pass{k}")
        ali_out = ws.exp / (HYBRID_ALI_DIR if last else f"{HYBRID_ALI_DIR}_pass{k}")
        log.info("hybrid: pass %d of %d: %s -> %s", k, passes, source.name, ali_out.name)
        init_from = previous_out / "final.pt" if warm_start and k > 1 else None
        pass_options = options.for_pass(k, later_epochs, warm_started=init_from is not None)
        stamp = {"pass": k, "source": source.name, "source_digest": alignment_digest(alignments),
                 "options": pass_options.identity(),
                 **({"warm_start_from": previous_out.name} if init_from else {})}
        summary = None if last else _finished_pass(out_dir, stamp)
        if summary is None:
            summary = hybrid_pass(ws, inputs, source, alignments, reference, out_dir, ali_out, ws.exp / gmm_dir,
                                  stamp, pass_options, init_from=init_from)
        else:
            log.info("hybrid: pass %d already done (%s), reusing it", k, out_dir / "diagnostics.json")
        summaries.append(summary)
        source, previous_out = ali_out, out_dir
        if not last:
            alignments = read_ali_dir(ali_out)
    return _stage_summary(summaries)


def _stage_summary(summaries: list[dict]) -> dict:
    """The last pass's summary; with several passes, also each pass's figures and every output."""
    final = summaries[-1]
    if len(summaries) > 1:
        final["passes"] = [{key: s[key] for key in ("frame_acc_heldout", "agreement_with_tri1", "failed", "wer")}
                           for s in summaries]
        final["outputs"] = [p for s in summaries for p in s["outputs"]]
    return final


def default_epochs(corpus: str, speed_perturb) -> int:
    """:data:`DEFAULT_EPOCHS` counts epochs over the original data; with speed-perturbed copies the
    training set is ``1 + len(factors)`` times larger, so the same number of frames is seen in
    proportionally fewer epochs (Kaldi's ``num-epochs`` likewise counts passes over the perturbed set).

    >>> default_epochs("an4", []), default_epochs("an4", [0.9, 1.1]), default_epochs("speechocean762", [0.9, 1.1])
    (8, 3, 2)
    """
    return max(1, round(DEFAULT_EPOCHS.get(corpus, 8) / (1 + len(speed_perturb))))


def alignment_digest(alignments: dict[str, np.ndarray]) -> str:
    """Content hash of alignments as read from a dir (not its gzip bytes, which carry a timestamp)."""
    import hashlib

    h = hashlib.sha1()
    for utt, ali in sorted(alignments.items()):
        h.update(utt.encode())
        h.update(np.asarray(ali, dtype=np.int32).tobytes())
    return h.hexdigest()


def _finished_pass(out_dir: Path, stamp: dict) -> dict | None:
    """The summary of an earlier pass finished with the same options on the same source, else None."""
    path = out_dir / "diagnostics.json"
    if not path.exists():
        return None
    diag = json.loads(path.read_text())
    if diag.get("pass_stamp") != json.loads(json.dumps(stamp)):
        return None
    return diag.get("summary")


def hybrid_pass(ws: Workspace, inputs: HybridInputs, src_ali: Path, source: dict[str, np.ndarray],
                reference: dict[str, np.ndarray], out_dir: Path, ali_out: Path, gmm_path: Path, stamp: dict,
                options: PassOptions, init_from: Path | None = None) -> dict:
    """One pass: train on ``source`` (the alignments of ``src_ali``, whose model and tree they use)
    into ``out_dir``, realign into ``ali_out``, report; agreement is measured against ``reference``.
    ``init_from``: a checkpoint to start from instead of fresh weights (a warm-started pass)."""
    report = SkipReport("hybrid")
    gmm = _SourceModel.read(src_ali)
    trained = _train_pass(inputs, src_ali, source, gmm, out_dir, options, report, init_from)
    if world()[0] != 0:
        # Under torchrun the other ranks only train: rank 0 alone realigns, decodes and writes the pass.
        wait_for_rank0()
        return read_json(out_dir / "diagnostics.json")["summary"]
    torch.set_num_threads(inference_threads(trained.train_config))
    model = trained.model.to("cpu")  # realignment and decoding run on CPU, next to CPU workers
    times = trained.times

    t0 = time.time()
    split_targets = {**trained.split_targets,
                     **_split_targets(inputs, inputs.evaluation, source, gmm.tid2pdf, report, options.max_mismatch)}
    infer_cfg = options.infer_config()
    realigned = realign_splits(ws, model, infer_cfg, trained.log_priors, gmm.trans_model, gmm.ctx_dep,
                               inputs, split_targets, set(trained.held_ids), report,
                               acoustic_scale=options.acoustic_scale, beam=options.beam,
                               retry_beam=options.retry_beam, nj=options.nj, cluster=options.cluster)
    times["realign_s"] = time.time() - t0
    written = write_hybrid_ali(ali_out, src_ali, realigned.alignments)
    diag = _pass_diagnostics(inputs, realigned, split_targets, source, reference, gmm, trained, options,
                             src_ali=src_ali, gmm_path=gmm_path, stamp=stamp, init_from=init_from)
    diag["skipped"] = report.summary()
    if options.decode:
        t0 = time.time()
        wer = _decode_wer(ws, model, infer_cfg, trained.log_priors, gmm.trans_model, gmm_path,
                          nj=options.nj, cluster=options.cluster, scratch=out_dir / "decode_scratch")
        times["decode_s"] = time.time() - t0
        diag.update(wer=wer["wer"], wer_set=wer["wer_set"], wer_details=wer)
    diag["times"] = {k: round(v, 1) for k, v in times.items()}
    report.log_summary()
    log.info("hybrid pass %d: frame acc train %.3f held-out %.3f, agreement with %s %.3f, %d/%d aligned "
             "(%d retried, %d failed), WER %s (%s %s)", stamp["pass"], diag["frame_acc_train"],
             diag["frame_acc_heldout"], diag["gmm"], diag["agreement_with_tri1"], diag["aligned"],
             diag["utterances"], diag["retried"], diag["failed"], diag["wer"], diag["gmm"], diag["tri1_wer"])
    return _write_pass_report(ws, out_dir, diag, stamp, report, written)


def inference_threads(cfg: TrainConfig) -> int:
    """Threads of rank 0's forward passes when it realigns and decodes: the cores all local ranks
    trained on (``LOCAL_WORLD_SIZE`` x each rank's threads), free while the others wait at the barrier;
    the alignment and decode workers beside it have little to do (2 ranks of 1 thread: 2 threads, the
    forward 1.6x faster than at 1; ``results/an4/hybrid_speed/session26/``)."""
    return (cfg.threads or default_threads()) * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


@dataclass(frozen=True)
class _SourceModel:
    """The transition model and tree of the GMM system whose alignments a pass trains on."""

    trans_model: object
    ctx_dep: object
    tid2pdf: np.ndarray
    num_pdfs: int

    @classmethod
    def read(cls, src_ali: Path) -> _SourceModel:
        from ..kaldi_io import read_model, read_tree

        trans_model, _ = read_model(src_ali / "final.mdl")
        return cls(trans_model=trans_model, ctx_dep=read_tree(src_ali / "tree"),
                   tid2pdf=ha.tid2pdf_array(trans_model), num_pdfs=int(trans_model.num_pdfs))


@dataclass
class _TrainedPass:
    """A pass's network after training, with what realigning and reporting need of its training."""

    model: torch.nn.Module
    state: object
    model_config: HybridConfig
    train_config: TrainConfig
    log_priors: np.ndarray
    held_ids: list[str]
    split_targets: dict[str, dict]
    times: dict[str, float]


def _train_pass(inputs: HybridInputs, src_ali: Path, source: dict[str, np.ndarray], gmm: _SourceModel,
                out_dir: Path, options: PassOptions, report: SkipReport, init_from: Path | None) -> _TrainedPass:
    """Targets, priors and the held-out speakers from ``source``; the BLSTM trained on them into ``out_dir``
    (resumed from its checkpoint when one names the same targets)."""
    t0 = time.time()
    split_targets = _split_targets(inputs, TRAINING_SPLITS, source, gmm.tid2pdf, report, options.max_mismatch)
    targets = split_targets["train"]
    if not targets:
        raise RuntimeError(f"hybrid: none of the {len(inputs.train)} train utterances has a usable "
                           f"alignment in {src_ali}")
    log_priors = _pass_log_priors(out_dir, targets, gmm.num_pdfs, options.prior_floor)
    utt2spk = {u: inputs.train[u][1] for u in targets}
    train_ids, held_ids = heldout_split(utt2spk, options.heldout_fraction, options.seed)
    train_cfg = options.train_config()
    model_cfg = options.model_config(gmm.num_pdfs, feat_dim=next(iter(targets.values()))[0].shape[1])
    train_data = _training_data(targets, train_ids, inputs, options.speed_perturb)
    times = {"load_s": time.time() - t0}
    t0 = time.time()
    targets_id = training_targets_digest(source, inputs)
    if init_from is not None:   # a checkpoint of a fresh start (or of another start) is not resumed
        targets_id += f"+init:{content_digest([init_from])}"
    model, state = train_hybrid(train_data, {u: targets[u] for u in held_ids}, model_cfg, train_cfg, out_dir,
                                cmvn=inputs.cmvn, targets_id=targets_id, init_from=init_from)
    times["train_s"] = time.time() - t0
    return _TrainedPass(model=model, state=state, model_config=model_cfg, train_config=train_cfg,
                        log_priors=log_priors, held_ids=held_ids, split_targets=split_targets, times=times)


def _pass_diagnostics(inputs: HybridInputs, realigned: Realignment, split_targets: dict, source: dict,
                      reference: dict, gmm: _SourceModel, trained: _TrainedPass, options: PassOptions, *,
                      src_ali: Path, gmm_path: Path, stamp: dict, init_from: Path | None) -> dict:
    """The pass's ``diagnostics.json`` before the WER check: frame accuracies, agreement, the training's
    history and the configs that made it."""
    # Agreement figures stay over train and dev, as before test was realigned; each evaluation split's apart.
    by_split = realigned.by_split(split_targets)
    infer = options.infer_config()
    trained_side = {u: a for split in TRAINING_SPLITS for u, a in by_split.get(split, {}).items()}
    return {
        **realigned.accuracies(inputs.evaluation),
        "realigned_per_split": {split: len(alis) for split, alis in by_split.items()},
        "agreement_with_tri1": senone_agreement(trained_side, reference, gmm.tid2pdf),
        "agreement_with_source": senone_agreement(trained_side, source, gmm.tid2pdf),
        **{f"agreement_with_tri1_{split}": senone_agreement(by_split[split], reference, gmm.tid2pdf)
           for split in inputs.evaluation},
        "source": src_ali.name,
        # The GMM system whose alignments, tree and HCLG the hybrid uses: the "tri1" keys
        # (agreement_with_tri1, tri1_wer) are this system's, whichever it is.
        "gmm": gmm_path.name,
        "pass": stamp["pass"],
        "speed_perturb": list(options.speed_perturb),
        **realigned.counts(),
        "num_pdfs": gmm.num_pdfs,
        "heldout_utterances": len(trained.held_ids),
        "best_epoch": trained.state.best_epoch,
        "epochs_run": trained.state.epoch,
        "history": trained.state.history,
        "model": trained.model_config.to_dict(),
        "train_config": trained.train_config.to_dict(),
        "infer_context": [infer.left_context, infer.right_context],
        "warm_start_from": str(init_from) if init_from else None,
        "acoustic_scale": options.acoustic_scale,
        "wer": None, "wer_set": None, "tri1_wer": _tri1_wer(gmm_path),
    }


def _split_targets(inputs: HybridInputs, splits, source: dict[str, np.ndarray], tid2pdf: np.ndarray,
                   report: SkipReport, max_mismatch: int) -> dict[str, dict]:
    """Per split of ``splits``, the pdf targets of every utterance whose ``source`` alignment is
    usable: train and dev before training; the evaluation splits (scored and realigned only) after."""
    feats = inputs.by_split()
    return {split: pdf_targets(feats[split], source, tid2pdf, report, max_mismatch) for split in splits}


def _pass_log_priors(out_dir: Path, targets: dict, num_pdfs: int, prior_floor: float) -> np.ndarray:
    """Log pdf priors from the train targets' counts; rank 0 saves them with the pass."""
    counts = pdf_counts((y for _, y in targets.values()), num_pdfs)
    priors = priors_from_counts(counts, prior_floor)
    if world()[0] == 0:
        save_priors(out_dir, priors, counts)
    return np.log(priors).astype(np.float32)


def _training_data(targets: dict, train_ids, inputs: HybridInputs, speed_perturb: list[float]) -> dict:
    """The utterances trained on: the train speakers' (held-out speakers apart), with their
    speed-perturbed copies when asked."""
    train_data = {u: targets[u] for u in train_ids}
    if speed_perturb:
        copies = speed_perturbed_targets(inputs.perturbed, train_data)
        log.info("hybrid: %d speed-perturbed copies (factors %s) beside %d train utterances",
                 len(copies), speed_perturb, len(train_data))
        train_data.update(copies)
    return train_data


@dataclass
class Realignment:
    """What realigning every split gave: the new alignments, the failures, and per-part frame
    accuracy tallies ``[correct, scored]`` against the source alignments (train's split into
    the trained-on and held-out speakers, so no split's frames count towards another's figure)."""

    alignments: dict[str, np.ndarray]
    tallies: dict[str, list[int]]
    utterances: int
    retried: int = 0
    failed: int = 0
    frames: int = 0

    def by_split(self, split_targets: dict[str, dict]) -> dict[str, dict[str, np.ndarray]]:
        return {split: {u: self.alignments[u] for u in split_t if u in self.alignments}
                for split, split_t in split_targets.items()}

    def accuracies(self, evaluation_splits) -> dict:
        acc = self.tallies
        return {
            "frame_acc_train": acc["train"][0] / max(acc["train"][1], 1),
            "frame_acc_heldout": acc["heldout"][0] / max(acc["heldout"][1], 1),
            "frame_acc_dev": acc["dev"][0] / max(acc["dev"][1], 1) if acc["dev"][1] else None,
            **{f"frame_acc_{split}": acc[split][0] / acc[split][1] if acc[split][1] else None
               for split in evaluation_splits},
            "frames_scored": {part: n for part, (_, n) in acc.items()},
        }

    def counts(self) -> dict:
        return {"utterances": self.utterances, "aligned": len(self.alignments), "retried": self.retried,
                "failed": self.failed, "failed_fraction": self.failed / max(self.utterances, 1),
                "frames": self.frames}


def realign_splits(ws: Workspace, model, cfg: TrainConfig, log_priors: np.ndarray, trans_model, ctx_dep,
                   inputs: HybridInputs, split_targets: dict[str, dict], held_set: set[str], report: SkipReport, *,
                   acoustic_scale: float, beam: float, retry_beam: float, nj: int,
                   cluster: str | None) -> Realignment:
    """Realign every utterance the source aligned (train, dev and the evaluation splits) over its
    training graph with the network's ``acoustic_scale * (log-posterior - log-prior)`` scores,
    tallying frame accuracy against the source's pdfs on the way."""
    from ..lang import Lang

    lang = Lang.load(ws.lang)
    compile_graph = TrainingGraphs(lang, trans_model, ctx_dep)
    split_feats = inputs.by_split()
    items = {u: (split_feats[split][u], split) for split, split_t in split_targets.items() for u in split_t}
    result = Realignment({}, {part: [0, 0] for part in ("train", "heldout", *split_targets)}, len(items))

    def tasks():
        for utt, lp in blocked_log_probs(model, cfg, {u: feats for u, (feats, _) in items.items()}):
            (_, _, text), split = items[utt]
            ref = split_targets[split][utt][1]
            part = "heldout" if split == "train" and utt in held_set else split
            result.tallies[part][0] += int((lp.argmax(-1) == ref).sum())
            result.tallies[part][1] += len(ref)
            scores = ha.pseudo_log_likelihoods(lp, log_priors, acoustic_scale)
            yield utt, lang.words_to_ids(text.split(), report, utt), lambda scores=scores: scores

    for res in tqdm(ha.align_utterances(tasks(), compile_graph=compile_graph, trans_model=trans_model,
                                        nj=nj, cluster=cluster, shared=(ws.data, ws.exp), beam=beam,
                                        retry_beam=retry_beam),
                    total=len(items), desc="hybrid realign"):
        result.retried += res.retried
        if res.alignment is None:
            result.failed += 1
            report.skip(res.utt_id, f"realignment failed: {res.error}")
            continue
        result.alignments[res.utt_id] = res.alignment
        result.frames += len(res.alignment)
    return result


def _write_pass_report(ws: Workspace, out_dir: Path, diag: dict, stamp: dict, report: SkipReport,
                       written: list[Path]) -> dict:
    """The pass's ``RESULTS.md`` and ``diagnostics.json`` (written last: its presence, with the pass
    stamp, marks the pass finished); returns the summary the stage reports."""
    summary = {**{k: diag[k] for k in ("frame_acc_train", "frame_acc_heldout", "agreement_with_tri1",
                                       "utterances", "aligned", "retried", "failed", "wer", "wer_set",
                                       "tri1_wer")},
               **report.summary(),
               "outputs": [str(p) for p in (out_dir / "final.pt", out_dir / "priors.npy",
                                            out_dir / "diagnostics.json", *written)]}
    with atomic_open(out_dir / "RESULTS.md") as f:
        f.write(results_markdown(ws, diag))
    write_json(out_dir / "diagnostics.json", {**diag, "pass_stamp": stamp, "summary": summary})
    wait_for_rank0()   # under torchrun: the other ranks read this pass's outputs from here on
    return summary


def senone_agreement(alignments: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                     tid2pdf: np.ndarray) -> float:
    """Share of frames whose pdf-id equals the reference alignment's (utterances in both, trimmed to the shorter)."""
    same = total = 0
    for utt, ali in alignments.items():
        if utt in reference:
            n = min(len(ali), len(reference[utt]))
            same += int((tid2pdf[ali[:n]] == tid2pdf[reference[utt][:n]]).sum())
            total += n
    return same / max(total, 1)


def _tri1_wer(gmm_dir: Path):
    path = gmm_dir / "diagnostics.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("wer")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _wer(x) -> str:
    return "n/a" if x is None else f"{x:.2f}%"   # compute_wer gives percent


def _infer_context_note(d: dict) -> str:
    """Where the network realigned and decoded with other context than it trained with, which."""
    infer = d.get("infer_context")
    trained = [d["train_config"]["left_context"], d["train_config"]["right_context"]]
    return f" ({infer[0]}/{infer[1]} when realigning and decoding)" if infer and infer != trained else ""


def _evaluation_splits_of(diagnostics: dict) -> list[str]:
    return [s for s in diagnostics.get("realigned_per_split", {}) if s not in TRAINING_SPLITS]


def _projection_note(model: dict) -> str:
    projection = HybridConfig(**model).projection
    return f"projection {projection}" if projection else "no projection"


def results_markdown(ws: Workspace, d: dict) -> str:
    gmm = d.get("gmm", "tri1")
    lines = [
        f"# Hybrid BLSTM on {ws.corpus}",
        "",
        f"Model: {d['model']['layers']} x BLSTM {d['model']['cells']} cells/direction, "
        f"{_projection_note(d['model'])}, {d['num_pdfs']} pdfs; chunks of {d['train_config']['chunk_width']} frames "
        f"with {d['train_config']['left_context']}/{d['train_config']['right_context']} frames of context"
        f"{_infer_context_note(d)}; "
        f"best epoch {d['best_epoch']} of {d['epochs_run']}. Pass {d.get('pass', 1)}: targets from "
        f"`{d.get('source', 'tri1_ali')}`; speed perturbation "
        f"{', '.join(f'{f:g}' for f in d['speed_perturb']) if d.get('speed_perturb') else 'none'}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| frame accuracy vs the target senones, train | {_pct(d['frame_acc_train'])} |",
        f"| frame accuracy, held-out train speakers | {_pct(d['frame_acc_heldout'])} |",
        f"| frame accuracy, dev | {_pct(d.get('frame_acc_dev'))} |",
        *[f"| frame accuracy, {split} (realigned for export only) | {_pct(d[f'frame_acc_{split}'])} |"
          for split in _evaluation_splits_of(d)],
        f"| realignment agreement with {gmm} (senone, per frame; train and dev) | {_pct(d['agreement_with_tri1'])} |",
        *[f"| realignment agreement with {gmm}, {split} | {_pct(d[f'agreement_with_tri1_{split}'])} |"
          for split in _evaluation_splits_of(d)],
        f"| realignment agreement with the targets | {_pct(d.get('agreement_with_source'))} |",
        f"| utterances realigned | {d['aligned']} / {d['utterances']} ({d['retried']} retried, {d['failed']} failed) |",
        f"| WER on {d['wer_set']} ({gmm} HCLG) | {_wer(d['wer'])} |",
        f"| {gmm} WER, same graph and split | {_wer(d['tri1_wer'])} |",
        "",
        "Per epoch:",
        "",
        "| epoch | lr | train loss | train acc | held-out loss | held-out acc |",
        "|---|---|---|---|---|---|",
    ]
    for h in d["history"]:
        lines.append(f"| {h['epoch']} | {h['lr']:.1e} | {h['train_loss']:.3f} | {_pct(h['train_frame_acc'])} | "
                     f"{h['heldout_loss']:.3f} | {_pct(h['heldout_frame_acc'])} |")
    lines += ["", f"Times (s): {d['times']}", ""]
    return "\n".join(lines)
