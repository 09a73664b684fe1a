"""Decoders for the E2E model of ``docs/E2E_INTERFACE.md``.

- :func:`greedy_ctc` — best CTC path per frame, repeats merged, blanks dropped (batched).
- :func:`greedy_attention` — argmax of the attention decoder step by step (batched).
- :func:`beam_search` — ESPnet-style joint CTC/attention beam search (Watanabe et al. 2017):
  a hypothesis' score is ``(1-λ)·log p_att(y) + λ·log p_ctc_prefix(y)`` with
  ``λ = ctc_weight`` (0.3 by default); the CTC prefix score is computed only for
  the ``1.5·beam`` best tokens of the attention decoder (pre-beam), all hypotheses
  of an utterance are scored in one decoder call, finished hypotheses are ranked
  by score divided by length (``length_normalize``). A model without decoder
  (``ctc_only``) makes it a CTC prefix beam search (λ = 1, every token scored).
  The decoder advances each hypothesis by one token per step from its kept state
  (``incremental``, when the decoder has ``init_state``/``step``/``select_state``);
  ``incremental=False`` re-runs it over every whole prefix, the original search,
  kept as the reference the incremental one must equal.

``decode_batches`` runs a decoder over batches (``batches_of``) of lhotse cuts with stored fbank
features: a set's batches, or one job's share of them when scoring shards the set.

>>> import torch
>>> from weakalign.e2e.decode import DecodeOptions
>>> DecodeOptions(mode="beam").beam, DecodeOptions().ctc_weight
(10, 0.3)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .ctc_prefix_score import CTCPrefixScorer

log = logging.getLogger("weakalign")

NEG_INF = float("-inf")


@dataclass
class DecodeOptions:
    mode: str = "beam"               # "greedy" (greedy CTC) or "beam" (joint CTC/attention beam search)
    beam: int = 10
    ctc_weight: float = 0.3          # λ; 1.0 or a model without decoder: CTC prefix beam search
    length_normalize: bool = True    # rank finished hypotheses by score / length
    maxlenratio: float = 0.0         # max output length = ratio · T' (0: T')
    minlenratio: float = 0.0
    pre_beam_ratio: float = 1.5      # CTC-score only the best 1.5·beam attention candidates
    end_detect_margin: float = 10.0  # ESPnet's end detection: stop when new ends are this much worse
    max_frames: int = 20000          # fbank frames per decoding batch

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Hypothesis:
    tokens: list[int]                # without <sos>/<eos>
    score: float                     # total weighted log score, <eos> included
    length: int = 0                  # tokens + <eos> + <sos> (ESPnet's normalisation length)

    def normalized(self) -> float:
        return self.score / max(self.length, 1)


# ---------------------------------------------------------------- greedy

def collapse_ctc(path: list[int], blank: int = 0) -> list[int]:
    """Merge repeats, then drop blanks.

    >>> collapse_ctc([0, 3, 3, 0, 3, 5, 5, 0])
    [3, 3, 5]
    """
    out, prev = [], None
    for tok in path:
        if tok != prev and tok != blank:
            out.append(tok)
        prev = tok
    return out


def greedy_ctc(ctc_log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Greedy CTC on a batch of log-posteriors ``(B, T', V)`` with lengths ``lens``."""
    best = ctc_log_probs.argmax(dim=-1).cpu().numpy()
    return [collapse_ctc(best[b, : int(lens[b])].tolist(), blank) for b in range(best.shape[0])]


def max_output_length(frames: int, opts: DecodeOptions) -> int:
    return max(1, int(opts.maxlenratio * frames)) if opts.maxlenratio > 0 else max(1, frames)


def _step_log_probs(model, ys: torch.Tensor, memory: torch.Tensor, memory_lens: torch.Tensor) -> torch.Tensor:
    """Decoder log-probabilities ``(N, V)`` of the next token after the prefixes ``ys`` (N, L)."""
    ys_lens = torch.full((ys.shape[0],), ys.shape[1], dtype=torch.long, device=ys.device)
    logits = model.decoder(ys, ys_lens, memory, memory_lens)
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def greedy_attention(model, enc_out: torch.Tensor, enc_lens: torch.Tensor, sos: int, eos: int,
                     blank: int = 0, opts: DecodeOptions | None = None) -> list[list[int]]:
    """Argmax attention decoding of a batch; ``<eos>`` is forced at each utterance's maximum length."""
    opts = opts or DecodeOptions()
    B = enc_out.shape[0]
    maxlens = [max_output_length(int(n), opts) for n in enc_lens]
    minlens = [int(opts.minlenratio * int(n)) for n in enc_lens]
    ys = torch.full((B, 1), sos, dtype=torch.long, device=enc_out.device)
    outputs: list[list[int] | None] = [None] * B
    for i in range(max(maxlens)):
        logp = _step_log_probs(model, ys, enc_out, enc_lens)
        logp[:, blank] = NEG_INF
        for b in range(B):
            if i < minlens[b]:
                logp[b, eos] = NEG_INF
            if i == maxlens[b] - 1:
                logp[b, :] = NEG_INF
                logp[b, eos] = 0.0
        nxt = logp.argmax(dim=-1)
        for b in range(B):
            if outputs[b] is None and int(nxt[b]) == eos:
                outputs[b] = ys[b, 1:].tolist()
        if all(o is not None for o in outputs):
            break
        ys = torch.cat([ys, nxt[:, None]], dim=1)
    return [o if o is not None else ys[b, 1:].tolist() for b, o in enumerate(outputs)]


# ---------------------------------------------------------------- attention scores of a beam

class _PrefixAttention:
    """Attention log-probabilities of a beam's next tokens, the decoder re-run over each whole prefix."""

    def __init__(self, model, memory: torch.Tensor):
        self.model, self.memory = model, memory

    def next_log_probs(self, ys: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` after the prefixes ``ys`` (N, L), ``<sos>`` first."""
        n, T = ys.shape[0], self.memory.shape[0]
        return _step_log_probs(self.model, ys, self.memory[None].expand(n, -1, -1),
                               torch.full((n,), T, dtype=torch.long, device=ys.device))

    def keep(self, hyp_idx: torch.Tensor) -> None:
        """Nothing to carry: the surviving prefixes are re-read at the next step."""


class _IncrementalAttention:
    """Attention log-probabilities of a beam's next tokens, each hypothesis' decoder state advanced by
    its newest token only: ``next_log_probs`` feeds ``ys[:, -1]`` to the states of ``ys[:, :-1]``."""

    def __init__(self, decoder, memory: torch.Tensor):
        self.decoder = decoder
        self.state = decoder.init_state(memory[None], torch.tensor([memory.shape[0]], device=memory.device))
        self.stepped = None   # the states with the newest tokens fed, until keep() picks the survivors

    def next_log_probs(self, ys: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` after the prefixes ``ys`` (N, L), ``<sos>`` first."""
        logits, self.stepped = self.decoder.step(ys[:, -1], self.state)
        return torch.log_softmax(logits.float(), dim=-1)

    def keep(self, hyp_idx: torch.Tensor) -> None:
        """The next step extends hypotheses ``hyp_idx`` of this one (repeats allowed), in that order."""
        self.state = self.decoder.select_state(self.stepped, hyp_idx)


def _attention_scorer(model, memory: torch.Tensor, incremental: bool):
    """The beam's attention scorer; a decoder without the one-token step API re-reads whole prefixes."""
    if incremental and hasattr(model.decoder, "step"):
        return _IncrementalAttention(model.decoder, memory)
    return _PrefixAttention(model, memory)


# ---------------------------------------------------------------- beam search

def _end_detected(ended: list[Hypothesis], step: int, margin: float, m: int = 3) -> bool:
    """ESPnet's ``end_detect``: the best hypotheses ending in each of the last ``m`` steps are all
    more than ``margin`` below the best finished one."""
    if not ended:
        return False
    best = max(h.score for h in ended)
    count = 0
    for k in range(m):
        length = step - k + 2  # <sos> + tokens + <eos> of a hypothesis that ended k steps ago
        scores = [h.score for h in ended if h.length == length]
        if scores and max(scores) - best < -margin:
            count += 1
    return count == m


@torch.inference_mode()
def beam_search(model, memory: torch.Tensor, ctc_log_probs: torch.Tensor | None, sos: int, eos: int,
                blank: int = 0, opts: DecodeOptions | None = None, incremental: bool = True) -> list[Hypothesis]:
    """Beam search over one utterance's encoder output ``memory`` (T', D); best hypothesis first.

    ``ctc_log_probs`` (T', V) is required when ``opts.ctc_weight > 0`` or the model has no decoder.
    ``incremental=False``: the decoder re-runs over whole prefixes (same hypotheses, slower).
    """
    opts = opts or DecodeOptions()
    has_decoder = getattr(model, "decoder", None) is not None
    ctc_weight = opts.ctc_weight if has_decoder else 1.0
    if ctc_weight > 0 and ctc_log_probs is None:
        raise ValueError("joint CTC scoring needs the CTC log-probabilities")
    T = memory.shape[0]
    device = memory.device
    if T == 0:  # too short for the subsampling: nothing can be emitted
        return [Hypothesis(tokens=[], score=0.0, length=2)]
    V = ctc_log_probs.shape[-1] if ctc_log_probs is not None else None
    maxlen = max_output_length(T, opts)
    minlen = int(opts.minlenratio * T)

    scorer = CTCPrefixScorer(ctc_log_probs, blank, eos) if ctc_weight > 0 else None
    ctc_state = scorer.initial_state() if scorer else None
    attention = _attention_scorer(model, memory, incremental) if has_decoder else None
    ys = torch.full((1, 1), sos, dtype=torch.long, device=device)   # running prefixes, <sos> first
    scores = torch.zeros(1, device=device)
    ended: list[Hypothesis] = []

    for i in range(maxlen):
        N = ys.shape[0]
        if has_decoder:
            att = attention.next_log_probs(ys)
            V = att.shape[-1]
            att[:, blank] = NEG_INF
        if i == maxlen - 1:
            # Out of frames: only <eos> may follow.
            cand = torch.full((N, 1), eos, dtype=torch.long, device=device)
        elif scorer is not None and has_decoder and ctc_weight < 1.0 and int(opts.pre_beam_ratio * opts.beam) < V - 1:
            cand = att.topk(int(opts.pre_beam_ratio * opts.beam), dim=-1).indices          # (N, C)
        else:
            cand = torch.arange(V, device=device).expand(N, V)
        if scorer is not None:
            psi, r = scorer.extend(ctc_state, cand)
            step = ctc_weight * (psi - ctc_state.psi[:, None])
            if has_decoder and ctc_weight < 1.0:
                step = step + (1.0 - ctc_weight) * att.gather(1, cand)
        else:
            step = att.gather(1, cand)
        total = scores[:, None] + step
        if i < minlen:
            total = total.masked_fill(cand == eos, NEG_INF)
        flat = total.reshape(-1)
        k = min(opts.beam, int(torch.isfinite(flat).sum()))
        if k == 0:
            break
        top_scores, top = flat.topk(k)
        hyp_idx, cand_idx = top // cand.shape[1], top % cand.shape[1]
        tokens = cand[hyp_idx, cand_idx]

        is_end = tokens == eos
        for j in torch.nonzero(is_end).flatten().tolist():
            ended.append(Hypothesis(tokens=ys[hyp_idx[j], 1:].tolist(), score=float(top_scores[j]), length=i + 2))
        keep = torch.nonzero(~is_end).flatten()
        if len(keep) == 0:
            break
        hyp_idx, cand_idx, tokens = hyp_idx[keep], cand_idx[keep], tokens[keep]
        ys = torch.cat([ys[hyp_idx], tokens[:, None]], dim=1)
        scores = top_scores[keep]
        if scorer is not None:
            ctc_state = scorer.select(ctc_state, r, psi, hyp_idx, cand_idx, tokens)
        if has_decoder:
            attention.keep(hyp_idx)
        if opts.maxlenratio == 0.0 and _end_detected(ended, i, opts.end_detect_margin):
            break

    if not ended:  # cannot happen with <eos> forced at maxlen; keep the running ones rather than nothing
        ended = [Hypothesis(tokens=ys[n, 1:].tolist(), score=float(scores[n]), length=ys.shape[1] + 1)
                 for n in range(ys.shape[0])]
    key = Hypothesis.normalized if opts.length_normalize else (lambda h: h.score)
    return sorted(ended, key=key, reverse=True)


# ---------------------------------------------------------------- whole batches and CutSets

@torch.inference_mode()
def decode_batch(model, feats: torch.Tensor, feat_lens: torch.Tensor, opts: DecodeOptions,
                 sos: int, eos: int, blank: int = 0, incremental: bool = True) -> list[list[int]]:
    """Token ids of each utterance of a padded batch (B, T, 80); ``incremental``: see :func:`beam_search`."""
    enc = model.encode(feats, feat_lens)
    ctc_lp = model.ctc_log_probs(enc.out)
    if opts.mode == "greedy":
        return greedy_ctc(ctc_lp, enc.lens, blank)
    if opts.mode != "beam":
        raise ValueError(f"unknown decoding mode {opts.mode!r} (greedy or beam)")
    out = []
    for b in range(feats.shape[0]):
        n = int(enc.lens[b])
        hyps = beam_search(model, enc.out[b, :n], ctc_lp[b, :n], sos, eos, blank, opts, incremental)
        out.append(hyps[0].tokens)
    return out


def batches_of(cuts, max_frames: int):
    """Cuts sorted by length, grouped so that padded frames stay under ``max_frames``: the
    decoding batches. A batch is decoded the same whichever job gets it, so a set's batches dealt
    to several jobs give the hypotheses of one job decoding them all."""
    ordered = sorted(cuts, key=lambda c: c.num_frames or 0, reverse=True)
    batch, longest = [], 0
    for cut in ordered:
        frames = cut.num_frames or 0
        if batch and max(longest, frames) * (len(batch) + 1) > max_frames:
            yield batch
            batch, longest = [], 0
        batch.append(cut)
        longest = max(longest, frames)
    if batch:
        yield batch


def _load_one(cut) -> torch.Tensor:
    feats = np.asarray(cut.load_features(), dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"features of shape {feats.shape}")
    return torch.from_numpy(feats)


def pad_feats(arrays: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True), lens


def decode_batches(model, tokenizer, batches, opts: DecodeOptions, device: torch.device | str = "cpu", *,
                   bar=None) -> tuple[dict[str, str], list[tuple[str, str]], float]:
    """Decode batches of cuts (:func:`batches_of`): ``{cut_id: text}``, the cuts skipped as
    ``(cut_id, reason)``, and the seconds of audio decoded. A cut whose features cannot be loaded
    is skipped with an empty hypothesis, so it still counts as deletions in the WER. ``bar``: a
    tqdm bar to advance by each batch's cuts."""
    model.eval()
    hyps: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    audio_s = 0.0
    for batch in batches:
        arrays, good = [], []
        for cut in batch:
            try:
                arrays.append(_load_one(cut))
                good.append(cut)
            except Exception as e:
                skipped.append((cut.id, f"cannot load features: {e}"))
                hyps[cut.id] = ""
        if good:
            feats, lens = pad_feats(arrays)
            ids = decode_batch(model, feats.to(device), lens.to(device), opts, tokenizer.sos_id,
                               tokenizer.eos_id, tokenizer.blank_id)
            for cut, seq in zip(good, ids):
                hyps[cut.id] = tokenizer.decode(seq)
                audio_s += cut.duration
        if bar is not None:
            bar.update(len(batch))
    return hyps, skipped, audio_s
