"""``weakalign emnet-plot``: the figures of an EM-Network run from its files (the paper's
Figs. 2 and 3), drawn by :mod:`~weakalign.e2e.emnet_plots`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .build import load_for_inference
from .data import AsrDataset, load_cuts, training_cuts_source
from .emnet import load_teacher_student
from .emnet_plots import plot_ctc_posteriors, plot_teacher_student_curves
from .metrics import read_metrics
from .tokenizer import Tokenizer

log = logging.getLogger("weakalign")


def emnet_plot(ws, run: str, ref_run: str | None = "ctc_only", utt: str | None = None, split: str = "dev",
               device: str = "cpu") -> dict:
    """Write ``emnet_curves.png`` and ``emnet_posteriors.png`` into ``exp/<c>/e2e/<run>/``.

    The posterior figure shows, for one ``split`` utterance (``utt``, default the first one),
    the reference run's CTC posteriors (``ref_run``'s ``model_avg.pt``; skipped if ``None`` or
    missing), the EM-Network student's and its teacher's (given the utterance's transcript).
    """
    from lhotse import CutSet

    run_dir = ws.exp / "e2e" / run
    outputs = {}
    metrics = read_metrics(run_dir)
    if metrics:
        outputs["curves"] = run_dir / "emnet_curves.png"
        plot_teacher_student_curves(metrics, outputs["curves"], title=run)

    model, config, epochs = load_teacher_student(run_dir, device)
    tok = Tokenizer(run_dir / "bpe.model")
    cuts = load_cuts(ws, split, config.get("cuts") or training_cuts_source(ws))
    if utt is None:
        cut = next(iter(cuts))
    else:
        if utt not in cuts.ids:
            raise KeyError(f"utterance {utt!r} is not in the {split} cuts of {ws.corpus}")
        cut = cuts[utt]
    batch = AsrDataset(tok)[CutSet.from_cuts([cut])]

    panels = []
    with torch.no_grad():
        if ref_run:
            ref_dir = ws.exp / "e2e" / ref_run
            if (ref_dir / "model_avg.pt").exists():
                ref_model, ref_tok, _ = load_for_inference(ref_dir, device)
                ref_batch = AsrDataset(ref_tok)[CutSet.from_cuts([cut])]
                enc = ref_model.encode(ref_batch["feats"].to(device), ref_batch["feat_lens"].to(device))
                # The reference run has its own BPE model (normally the same pieces: same text, size).
                panels.append((f"{ref_run}", ref_model.ctc_log_probs(enc.out)[0].exp().cpu().numpy(),
                               _pieces(ref_tok)))
            else:
                log.warning("emnet-plot: %s has no model_avg.pt; plotting without the reference run", ref_dir)
        feats, lens = batch["feats"].to(device), batch["feat_lens"].to(device)
        enc = model.encode(feats, lens)
        student = model.ctc_log_probs(enc.out)[0].exp().cpu().numpy()
        teacher = model.teacher_ctc_log_probs(enc, batch["tokens"])[0].exp().cpu().numpy()
    pieces = _pieces(tok)
    panels = [(name, _onto_pieces(post, own, pieces, name)) for name, post, own in panels]
    panels += [(f"{run}: student", student), (f"{run}: teacher (oracle-guided)", teacher)]
    outputs["posteriors"] = run_dir / "emnet_posteriors.png"
    plot_ctc_posteriors(panels, outputs["posteriors"], pieces,
                        title=f"{cut.id}: \"{batch['texts'][0]}\" (checkpoints {epochs})")
    log.info("emnet-plot: wrote %s", ", ".join(str(p) for p in outputs.values()))
    return outputs


def _onto_pieces(post: np.ndarray, own: list[str], pieces: list[str], name: str) -> np.ndarray:
    """Posterior columns of another BPE inventory ``own`` moved to ``pieces`` (same piece, same column)."""
    if own == pieces:
        return post
    index = {p: i for i, p in enumerate(pieces)}
    out = np.zeros((post.shape[0], len(pieces)), dtype=post.dtype)
    lost = 0
    for j, p in enumerate(own):
        if p in index:
            out[:, index[p]] += post[:, j]
        else:
            lost += 1
    log.warning("emnet-plot: %s has another BPE model; its posteriors are mapped piece by piece "
                "(%d of its %d pieces are not in this run's model and are not drawn)", name, lost, len(own))
    return out


def _pieces(tok) -> list[str]:
    """Label of every token id: ``<b>`` for blank, the BPE piece, ``<s/e>`` for sos/eos."""
    labels = ["<b>"] + [tok.sp.id_to_piece(i).replace("\u2581", "_") for i in range(tok.sp.get_piece_size())] + ["<s/e>"]
    return labels
