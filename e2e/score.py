"""The ``score`` stage: decode every prepared split but ``train``, score it, write the results.

For a run dir ``exp/<c>/e2e/<run>/`` and decoding mode ``greedy`` or ``beam``:

- ``decode_<mode>/<split>/hyp.trn``, ``ref.trn`` (sclite trn), ``utt2spk``,
  ``result.wer.md`` / ``result.cer.md`` (sclite-style tables per speaker),
  ``per_utt.txt`` (aligned REF/HYP with counts, worst first), ``decode.json`` (timing);
- ``results.json``: ``{split: {"wer", "cer", "ci95", "cer_ci95", "words", "corr", "sub", "del", "ins",
  "sentences", "sentence_errors", "decode": {...}, "rtf", ...}, "training": {...}}`` (percentages), the
  splits scored last; ``"training"`` is a copy of the run's ``training.json`` (seed, cuts,
  ``alignment_digest``, stopping rule, checkpoint selection; written by the trainer at the end of a
  run), absent for runs trained before it existed. It is the only non-split key: readers take the
  splits with :func:`weakalign.e2e.scoring.split_results`;
- ``RESULTS.md``: the tables, bootstrap intervals, decoding options and environment.

Splits come from ``ws.available_splits()`` (their fbank CutSets give features and
reference text), so a user who prepared speechocean762's ``test`` half gets it
scored too. A split whose ``hyp.trn`` is complete (every cut, decoded by the same
``model_avg.pt`` — by content hash — with the same options) is not decoded again
unless ``force``; scoring itself is always redone.

Decoding is sharded over the execution layer (:class:`~weakalign.kaldi_steps.execution.Executor`),
as the GMM stages are: a split's decoding batches (:func:`~.decode.batches_of`, made here) are
dealt to ``nj`` jobs (batch ``b`` to job ``b % nj``), each a Dask task that loads the model from
the run dir (once per worker) and decodes its batches on one thread; the hypotheses are gathered
in job order. A batch is decoded the same by whichever job gets it, so the hypotheses are those of
``nj=1``, which decodes in this process without Dask. Where the jobs run: a local cluster of ``nj``
processes, or ``cluster`` (a scheduler's address, or ``slurm``/``pbs``/``sge``); the data root and
the run dir must then be on a filesystem the workers share (checked before the first job).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path

from weakalign.pipeline.distributed import resolve_device
from weakalign.pipeline.io import atomic_open, read_json, write_json
from weakalign.pipeline.report import SkipReport
from weakalign.pipeline.workspace import Workspace

from .decode import DecodeOptions, batches_of, decode_batches
from .environment import environment, environment_markdown
from .scoring import read_trn, score_trn_dir, sclite_table, summary_dict, write_trn
from .significance import bootstrap_ci

log = logging.getLogger("weakalign")

MODEL_FILE = "model_avg.pt"
TRAINING_FILE = "training.json"   # written by the trainer at the end of a run


def run_dir_for(ws: Workspace, config: str, seed: int | None = None, run: str | None = None) -> Path:
    """``exp/<c>/e2e/<run>``, the trainer's naming (``<config>`` or ``<config>_seed<n>``)."""
    if run is None:
        from .config import run_name

        run = run_name(config, seed)
    return ws.exp / "e2e" / run


def splits_to_score(ws: Workspace) -> list[str]:
    return [s for s in ws.available_splits() if s != "train"]


def load_split_cuts(ws: Workspace, split: str):
    from lhotse import CutSet

    return CutSet.from_file(ws.fbank_cuts(split))


def references(cuts, report: SkipReport) -> tuple[dict[str, str], dict[str, str], list]:
    """``{cut_id: text}``, ``{cut_id: speaker}`` and the cuts to decode (those with one supervision)."""
    refs, utt2spk, keep = {}, {}, []
    for cut in cuts:
        if len(cut.supervisions) != 1:
            report.skip(cut.id, f"{len(cut.supervisions)} supervisions (expected 1); not scored")
            continue
        sup = cut.supervisions[0]
        refs[cut.id] = sup.text or ""
        utt2spk[cut.id] = sup.speaker or cut.id
        keep.append(cut)
    return refs, utt2spk, keep


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hyp_is_complete(split_dir: Path, utt_ids: set[str], model_digest: str, opts: DecodeOptions) -> bool:
    """``hyp.trn`` holds every utterance, decoded by this very model with these options."""
    hyp, info = split_dir / "hyp.trn", split_dir / "decode.json"
    if not hyp.exists() or not info.exists():
        return False
    done = read_json(info)
    if done.get("model_sha1") != model_digest or done.get("options") != opts.as_dict():
        log.info("%s: decoded by another model or with other options: decoding again", split_dir)
        return False
    try:
        return set(read_trn(hyp)) == utt_ids
    except ValueError:
        return False


def _write_utt2spk(path: Path, utt2spk: dict[str, str]) -> None:
    with atomic_open(path, "w") as f:
        for utt in sorted(utt2spk):
            f.write(f"{utt} {utt2spk[utt]}\n")


def read_utt2spk(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())


def score_split_dir(split_dir: Path, *, replicas: int = 2000, seed: int = 0) -> dict:
    """Score ``hyp.trn`` vs ``ref.trn`` in ``split_dir``: the figures results.json holds, plus tables."""
    utt2spk = read_utt2spk(split_dir / "utt2spk")
    scored = score_trn_dir(split_dir, utt2spk)
    word, char = scored["word"], scored["char"]
    utts = sorted(word.per_utt)
    wer_ci = bootstrap_ci([word.per_utt[u].err for u in utts], [word.per_utt[u].words for u in utts],
                          replicas=replicas, seed=seed)
    cer_ci = bootstrap_ci([char.per_utt[u].err for u in utts], [char.per_utt[u].words for u in utts],
                          replicas=replicas, seed=seed)
    w, c = summary_dict(word), summary_dict(char)
    result = {"wer": w["err"], "cer": c["err"], "ci95": wer_ci["ci95"], "cer_ci95": cer_ci["ci95"],
              "words": w["words"], "corr": w["corr"], "sub": w["sub"], "del": w["del"], "ins": w["ins"],
              "sentences": w["sentences"], "sentence_errors": w["sentence_errors"],
              "ser": w["sentence_error_rate"], "chars": c["words"],
              "bootstrap": {"replicas": replicas, "seed": seed, "method": "percentile, utterances resampled"},
              "hyp_trn": str(split_dir / "hyp.trn"), "ref_trn": str(split_dir / "ref.trn")}
    return {"result": result, "wer_table": sclite_table(word, utt2spk), "cer_table": sclite_table(char, utt2spk)}


def score_run(ws: Workspace, run_dir: str | os.PathLike, *, mode: str = "beam", device: str = "auto",
              redecode: bool = False, splits: list[str] | None = None, options: dict | None = None,
              nj: int = 1, cluster: str | None = None) -> dict:
    """Decode and score ``splits`` (default: every prepared split but train) of one run dir, the
    decoding in ``nj`` jobs on ``cluster`` (see the module docstring)."""
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} not found: train the run first (weakalign train)")
    opts = DecodeOptions(mode=mode, **(options or {}))
    dev = resolve_device(device)
    report = SkipReport("score")
    splits = splits or splits_to_score(ws)
    if not splits:
        raise FileNotFoundError(f"no prepared split other than train under {ws.data / 'manifests'}")
    decode_root = run_dir / f"decode_{mode}"
    digest = file_digest(model_path)
    results, tables = {}, {}
    with contextlib.ExitStack() as stack:
        executor = None
        for split in splits:
            if not ws.fbank_cuts(split).exists():
                report.skip(split, f"no fbank CutSet {ws.fbank_cuts(split)} (run the features stage)")
                continue
            split_dir = decode_root / split
            refs, utt2spk, cuts = references(load_split_cuts(ws, split), report)
            if not cuts:
                report.skip(split, "no cut to decode")
                continue
            timing_path = split_dir / "decode.json"
            if not redecode and hyp_is_complete(split_dir, set(refs), digest, opts):
                log.info("score: %s/%s already decoded (%s); --force to decode again", run_dir.name, split,
                         split_dir)
                timing = read_json(timing_path) if timing_path.exists() else {}
            else:
                if executor is None:  # started for the first split to decode, kept for the others
                    from weakalign.kaldi_steps.execution import Executor

                    executor = stack.enter_context(Executor(nj, cluster, shared=(ws.data, run_dir)))
                    stack.callback(_LOADED.clear)
                hyps, timing = decode_split(executor, run_dir, digest, cuts, opts, dev, report, split)
                timing = {**timing, "device": str(dev), "options": opts.as_dict(), "utterances": len(hyps),
                          "model_sha1": digest}
                write_trn(split_dir / "ref.trn", refs)
                _write_utt2spk(split_dir / "utt2spk", utt2spk)
                write_json(timing_path, timing)
                write_trn(split_dir / "hyp.trn", hyps)   # last: its presence means the split is decoded
            scored = score_split_dir(split_dir)
            scored["result"]["hyp_trn"] = str((split_dir / "hyp.trn").relative_to(run_dir))
            scored["result"]["ref_trn"] = str((split_dir / "ref.trn").relative_to(run_dir))
            results[split] = {**scored["result"], "decode": timing.get("options", opts.as_dict()),
                              "rtf": timing.get("rtf"), "device": timing.get("device", str(dev))}
            tables[split] = scored
            log.info("score: %s %s WER %.2f%% %s CER %.2f%% (%d words)", run_dir.name, split,
                     results[split]["wer"] or float("nan"), results[split]["ci95"],
                     results[split]["cer"] or float("nan"), results[split]["words"])
    report.log_summary()
    env = environment(str(dev))
    write_json(decode_root / "results.json", results)
    training = write_run_results(run_dir, results)
    write_results_md(run_dir / "RESULTS.md", run_dir.name, ws.corpus, mode, opts, results, tables, env, training)
    return {"run_dir": str(run_dir), "results": results, "skipped": report.summary(),
            "outputs": [run_dir / "results.json", run_dir / "RESULTS.md"]}


def decode_split(executor, run_dir: Path, digest: str, cuts: list, opts: DecodeOptions, device,
                 report: SkipReport, split: str) -> tuple[dict[str, str], dict]:
    """``{cut_id: text}`` of ``cuts`` and the timing figures (``rtf`` = wall time / audio time), the
    batches dealt to ``executor.nj`` jobs (one job in this process when it has no Dask client)."""
    start = time.time()
    batches = list(batches_of(cuts, opts.max_frames))
    what = f"decode {split}"
    if executor.client is None:
        jobs = [(str(run_dir), digest, batches, opts, str(device), None, what)]
    else:
        jobs = [(str(run_dir), digest, batches[j::executor.nj], opts, str(device), 1, None)
                for j in range(min(executor.nj, len(batches)))]
    hyps, audio_s, attention = {}, 0.0, True
    for done in executor.map(decode_job, jobs, what):
        hyps.update(done["hyps"])
        audio_s += done["audio_s"]
        attention = done["attention"]
        for cut_id, reason in done["skipped"]:
            report.skip(cut_id, reason)
    if opts.mode == "beam" and not attention:
        log.info("score: %s has no attention decoder: CTC prefix beam search", run_dir.name)
    seconds = time.time() - start
    return hyps, {"decode_s": round(seconds, 3), "audio_s": round(audio_s, 3),
                  "rtf": round(seconds / audio_s, 4) if audio_s else None, "jobs": len(jobs)}


#: The model a process decodes with, kept between the jobs it runs: ``{(run_dir, sha1, device): (model, tokenizer)}``.
_LOADED: dict = {}


def decode_job(run_dir: str, digest: str, batches: list, opts: DecodeOptions, device: str,
               threads: int | None, desc: str | None) -> dict:
    """One job of :func:`decode_split`, in a Dask worker or this process: the run's model (loaded
    once per process and model file) decodes ``batches`` on ``threads`` torch threads (None: as
    they are); ``desc``: a bar of the utterances decoded. The hypotheses, skips and audio seconds."""
    import torch
    from tqdm import tqdm

    from .build import load_for_inference

    if threads is not None:
        torch.set_num_threads(threads)
    key = (run_dir, digest, device)
    if key not in _LOADED:
        _LOADED.clear()
        model, tokenizer, _ = load_for_inference(run_dir, device)
        if file_digest(Path(run_dir) / MODEL_FILE) != digest:
            raise RuntimeError(f"{Path(run_dir) / MODEL_FILE} changed while the run was being scored")
        _LOADED[key] = model, tokenizer
    model, tokenizer = _LOADED[key]
    with tqdm(total=sum(map(len, batches)), desc=desc, unit="utt", leave=False, disable=desc is None) as bar:
        hyps, skipped, audio_s = decode_batches(model, tokenizer, batches, opts, device, bar=bar)
    return {"hyps": hyps, "skipped": skipped, "audio_s": audio_s, "attention": model.decoder is not None}


def read_training(run_dir: Path) -> dict | None:
    """The run's ``training.json`` (what it trained on and how it stopped), or None if it has none."""
    path = Path(run_dir) / TRAINING_FILE
    if not path.exists():
        return None
    training = read_json(path)
    if not isinstance(training, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(training).__name__}")
    return training


def write_run_results(run_dir: Path, results: dict) -> dict | None:
    """Write ``run_dir/results.json``: the splits' ``results`` and, under ``"training"``, the run's
    ``training.json`` when it has one (returned)."""
    training = read_training(run_dir)
    write_json(Path(run_dir) / "results.json", {**results, "training": training} if training is not None else results)
    return training


def training_markdown(training: dict) -> list[str]:
    """The training record as a short markdown list (RESULTS.md)."""
    stopping = training.get("stopping") or {}
    selection = training.get("selection") or {}
    digest = training.get("alignment_digest")
    return [f"- cuts: `{training.get('cuts')}`, alignment digest: `{digest[:12] if digest else None}`",
            f"- seed {training.get('seed')}, {training.get('world_size')} process(es) x {training.get('threads')} "
            f"thread(s) on {training.get('device')}, {training.get('train_seconds')} s",
            f"- {training.get('epochs_run')} epochs, {training.get('updates')} updates, stopped early: "
            f"{training.get('stopped_early')}; stopping: `{stopping}`",
            f"- model: average of epochs {selection.get('averaged_epochs')} (best {selection.get('keep_best')} "
            f"by {selection.get('criterion')})"]


def write_results_md(path: Path, run: str, corpus: str, mode: str, opts: DecodeOptions, results: dict,
                     tables: dict, env: dict, training: dict | None = None) -> None:
    decoding = ("greedy CTC" if mode == "greedy" else
                f"joint CTC/attention beam search (beam {opts.beam}, ctc_weight {opts.ctc_weight}, "
                f"length normalisation {'on' if opts.length_normalize else 'off'})")
    lines = [f"# RESULTS: {run} ({corpus})", "", "## Environment", environment_markdown(env), "",
             *(["## Training", *training_markdown(training), ""] if training else []),
             "## Decoding", f"- model: `{MODEL_FILE}` (averaged checkpoints)", f"- decoder: {decoding}",
             f"- options: `{opts.as_dict()}`", "", "## Summary", "",
             "| set | WER | 95% CI | CER | 95% CI | # Snt | # Wrd | S.Err | RTF |", "|---" * 9 + "|"]
    for split, r in results.items():
        lines.append(f"| {split} | {r['wer']} | [{r['ci95'][0]}, {r['ci95'][1]}] | {r['cer']} | "
                     f"[{r['cer_ci95'][0]}, {r['cer_ci95'][1]}] | {r['sentences']} | {r['words']} | {r['ser']} | "
                     f"{r['rtf']} |")
    lines.append("")
    lines.append("95% CI: bootstrap over utterances (Bisani & Ney 2004), 2000 replicas, percentile interval.")
    for unit, key in (("WER", "wer_table"), ("CER", "cer_table")):
        lines += ["", f"## {unit}", ""]
        for split, t in tables.items():
            lines += [f"### decode_{mode}/{split}", "", t[key], ""]
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
