"""Decoders: CTC prefix scores, joint CTC/attention beam search, greedy decoders.

The searches run for real on a tiny random model that satisfies the interface
(tests/e2e/decode_doubles.py); where the trained model of weakalign.e2e.model can
be built, it is decoded too.
"""

import itertools
import math

import pytest
import torch

from weakalign.e2e.ctc_prefix_score import CTCPrefixScorer
from weakalign.e2e.decode import (DecodeOptions, beam_search, collapse_ctc, decode_batch, greedy_attention,
                                  greedy_ctc)

from .decode_doubles import TinyModel

torch.set_num_threads(1)


def ctc_loss_log_prob(log_probs: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens | x) from torch's CTC forward algorithm (the reference)."""
    if not tokens:
        return float(log_probs[:, 0].sum())
    loss = torch.nn.functional.ctc_loss(log_probs[:, None].double(), torch.tensor([tokens]),
                                        torch.tensor([log_probs.shape[0]]), torch.tensor([len(tokens)]),
                                        blank=0, reduction="sum", zero_infinity=False)
    return -float(loss)


def att_log_prob(model, memory, tokens, sos, eos) -> float:
    """Teacher-forced attention log P(tokens + <eos>), blank excluded as in the search."""
    ys = torch.tensor([[sos] + tokens])
    logits = model.decoder(ys, torch.tensor([ys.shape[1]]), memory[None], torch.tensor([memory.shape[0]]))
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    logp[:, 0] = float("-inf")
    return float(sum(logp[i, t] for i, t in enumerate(tokens + [eos])))


@pytest.mark.parametrize("tokens", [[3], [2, 5, 5, 7], [4, 4, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
def test_prefix_score_of_complete_hypothesis_equals_ctc_loss(tokens):
    torch.manual_seed(len(tokens))
    lp = torch.randn(20, 11).mul(2).log_softmax(-1).double()
    scorer = CTCPrefixScorer(lp, blank=0, eos=10)
    assert scorer.sequence_log_prob(tokens) == pytest.approx(ctc_loss_log_prob(lp, tokens), abs=1e-6)


def test_prefix_score_is_sum_over_continuations():
    """psi(g) = sum over complete outputs starting with g (exhaustive on a tiny problem)."""
    torch.manual_seed(0)
    T, V = 4, 4  # blank 0, tokens 1..2, eos 3
    lp = torch.randn(T, V).double()
    lp[:, 3] = float("-inf")  # <eos> is not a CTC label
    lp = lp.log_softmax(-1)
    scorer = CTCPrefixScorer(lp, blank=0, eos=3)
    outputs = [list(s) for L in range(T + 1) for s in itertools.product([1, 2], repeat=L)]
    full = {tuple(o): math.exp(scorer.sequence_log_prob(o)) for o in outputs}
    assert sum(full.values()) == pytest.approx(1.0, abs=1e-9)
    state = scorer.initial_state()
    psi, _ = scorer.extend(state, torch.tensor([[1, 2]]))
    for j, tok in enumerate([1, 2]):
        expected = sum(p for o, p in full.items() if o[:1] == (tok,))
        assert math.exp(float(psi[0, j])) == pytest.approx(expected, rel=1e-9)


def test_collapse_and_greedy_ctc():
    assert collapse_ctc([0, 0, 0]) == []
    lp = torch.full((2, 5, 4), -10.0)
    path = [[1, 1, 0, 1, 2], [3, 0, 0, 0, 0]]
    for b, p in enumerate(path):
        lp[b, torch.arange(5), torch.tensor(p)] = 0.0
    assert greedy_ctc(lp, torch.tensor([5, 3])) == [[1, 1, 2], [3]]


def _utterances(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(40, 120, (n,), generator=g)
    feats = torch.randn(n, int(lens.max()), 80, generator=g)
    return feats, lens


def test_beam1_without_ctc_equals_greedy_attention():
    model = TinyModel(vocab=12, seed=1).eval()
    sos = eos = 11
    feats, lens = _utterances()
    with torch.no_grad():
        enc = model.encode(feats, lens)
        ctc = model.ctc_log_probs(enc.out)
        batched = greedy_attention(model, enc.out, enc.lens, sos, eos)
        opts = DecodeOptions(beam=1, ctc_weight=0.0)
        lengths = []
        for b in range(len(lens)):
            n = int(enc.lens[b])
            single = greedy_attention(model, enc.out[b:b + 1, :n], enc.lens[b:b + 1], sos, eos)[0]
            beam = beam_search(model, enc.out[b, :n], ctc[b, :n], sos, eos, opts=opts)[0]
            assert beam.tokens == single == batched[b]
            assert beam.score == pytest.approx(att_log_prob(model, enc.out[b, :n], beam.tokens, sos, eos), abs=1e-4)
            lengths.append(len(beam.tokens))
    assert max(lengths) > 1, "degenerate test: every hypothesis is empty or one token"


def test_joint_score_is_weighted_sum_of_attention_and_ctc():
    model = TinyModel(vocab=12, seed=2).eval()
    sos = eos = 11
    feats, lens = _utterances(3, seed=2)
    opts = DecodeOptions(beam=4, ctc_weight=0.3, length_normalize=False)
    with torch.no_grad():
        enc = model.encode(feats, lens)
        ctc = model.ctc_log_probs(enc.out)
        for b in range(3):
            n = int(enc.lens[b])
            hyps = beam_search(model, enc.out[b, :n], ctc[b, :n], sos, eos, opts=opts)
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps[:3]:
                expected = (0.7 * att_log_prob(model, enc.out[b, :n], h.tokens, sos, eos)
                            + 0.3 * ctc_loss_log_prob(ctc[b, :n].double(), h.tokens))
                assert h.score == pytest.approx(expected, abs=1e-3)


def test_ctc_prefix_beam_search_finds_exhaustive_best():
    """Without decoder the beam search is a CTC prefix search; a wide beam is exact on a tiny problem."""
    torch.manual_seed(3)
    T, V = 6, 4  # blank 0, tokens 1..2, eos 3
    lp = torch.randn(T, V).mul(1.5).log_softmax(-1)
    lp[:, 3] = float("-inf")  # the CTC head never emits <eos>
    lp = lp.log_softmax(-1)
    model = TinyModel(vocab=V, decoder=False)
    best = beam_search(model, torch.zeros(T, 4), lp, sos=3, eos=3, opts=DecodeOptions(beam=80, length_normalize=False))
    outputs = [list(s) for L in range(T + 1) for s in itertools.product([1, 2], repeat=L)]
    scores = {tuple(o): ctc_loss_log_prob(lp.double(), o) for o in outputs}
    truth = max(scores, key=scores.get)
    assert tuple(best[0].tokens) == truth
    assert best[0].score == pytest.approx(scores[truth], abs=1e-4)


def test_decode_batch_modes_agree_in_shape():
    model = TinyModel(vocab=12, seed=4).eval()
    feats, lens = _utterances(4, seed=4)
    greedy = decode_batch(model, feats, lens, DecodeOptions(mode="greedy"), 11, 11)
    beam = decode_batch(model, feats, lens, DecodeOptions(mode="beam", beam=3), 11, 11)
    assert len(greedy) == len(beam) == 4
    assert all(0 not in h for h in greedy) and all(0 not in h and 11 not in h for h in beam)
    with pytest.raises(ValueError, match="unknown decoding mode"):
        decode_batch(model, feats, lens, DecodeOptions(mode="viterbi"), 11, 11)


TINY = {"enc_hidden": 16, "enc_proj": 16, "dec_hidden": 16, "dec_embed": 16, "dec_heads": 2, "conv_channels": 4,
        "enc_layers": 2, "aux_layer": 1}


def test_real_model_beam1_equals_greedy_attention_on_an4_fbank(an4_slice):
    """The project's E2EModel (random weights, sharpened output) decoded on real AN4 fbank features."""
    from lhotse import CutSet

    from weakalign.e2e.config import load_config
    from weakalign.e2e.decode import pad_feats, _load_one
    from weakalign.e2e.build import build_model

    torch.manual_seed(0)
    model = build_model(load_config("baseline", overrides=TINY), vocab_size=30).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(4.0)  # peakier random distributions: longer, more varied hypotheses
    cuts = list(CutSet.from_file(an4_slice.fbank_cuts("test")))[:4]
    feats, lens = pad_feats([_load_one(c) for c in cuts])
    sos = eos = 29
    with torch.no_grad():
        enc = model.encode(feats, lens)
        ctc = model.ctc_log_probs(enc.out)
        greedy = greedy_attention(model, enc.out, enc.lens, sos, eos)
        for b in range(len(cuts)):
            n = int(enc.lens[b])
            beam = beam_search(model, enc.out[b, :n], ctc[b, :n], sos, eos, opts=DecodeOptions(beam=1, ctc_weight=0.0))
            single = greedy_attention(model, enc.out[b:b + 1, :n], enc.lens[b:b + 1], sos, eos)[0]
            assert beam[0].tokens == single
            assert single == greedy[b]
        joint = beam_search(model, enc.out[0, :int(enc.lens[0])], ctc[0, :int(enc.lens[0])], sos, eos,
                            opts=DecodeOptions(beam=5, ctc_weight=0.3))
        assert len(joint) >= 1 and all(0 not in h.tokens and eos not in h.tokens for h in joint)


# ---------------------------------------------------------------- incremental decoding

def test_decoder_steps_equal_the_teacher_forced_pass_over_padded_memories():
    """One token at a time from the kept state, with hypotheses reordered in between, gives the
    logits of the whole-sequence pass; padded memory frames stay unattended."""
    from weakalign.e2e.decoder import AttentionDecoder

    torch.manual_seed(5)
    dec = AttentionDecoder(vocab_size=12, memory_dim=6, embed_dim=8, hidden=8, num_layers=2, heads=2).eval()
    memory, memory_lens = torch.randn(3, 9, 6), torch.tensor([9, 4, 6])
    ys = torch.randint(1, 12, (3, 5))
    with torch.no_grad():
        full = dec(ys, torch.tensor([5, 5, 5]), memory, memory_lens)
        order = torch.tensor([2, 0, 1])                      # a beam's reordering, applied after step 2
        state = dec.init_state(memory, memory_lens)
        for i in range(5):
            rows = order if i > 2 else torch.arange(3)
            logits, state = dec.step(ys[rows, i], state)
            assert torch.allclose(logits, full[rows, i], atol=1e-5), i
            if i == 2:
                state = dec.select_state(state, order)


# ---------------------------------------------------------------- incremental search == full-prefix search, trained model

#: A small but real run: 2 decoder layers so that the per-layer LSTM state is exercised too.
TRAINED = {**TINY, "enc_hidden": 32, "enc_proj": 32, "dec_hidden": 32, "dec_embed": 16, "dec_layers": 2,
           "vocab_size": 30}


@pytest.fixture(scope="module")
def trained_an4_model(an4_slice, tmp_path_factory):
    """``(model, tokenizer)`` of a small run of the real trainer on the AN4 slice (a few short epochs:
    hypotheses of several different tokens, not accuracy)."""
    from weakalign.e2e.build import load_for_inference
    from weakalign.e2e.train import train_run
    from weakalign.pipeline.workspace import Workspace

    ws = Workspace("an4", data_root=an4_slice.data_root, exp_root=tmp_path_factory.mktemp("exp_decode"))
    train_run(ws, "baseline", epochs=4, overrides=TRAINED, run="small", max_steps_per_epoch=8, device="cpu")
    model, tok, _ = load_for_inference(ws.exp / "e2e" / "small", "cpu")
    return model, tok


def test_incremental_beam_search_equals_full_prefix_search_on_a_trained_model(trained_an4_model, an4_slice):
    """The decoder advanced one token per step from kept states finds the same n-best, with the same
    scores, as the decoder re-run over whole prefixes, on every AN4 test utterance of the slice."""
    from lhotse import CutSet

    from weakalign.e2e.decode import _load_one, pad_feats

    model, tok = trained_an4_model
    cuts = sorted(CutSet.from_file(an4_slice.fbank_cuts("test")), key=lambda c: c.id)
    feats, lens = pad_feats([_load_one(c) for c in cuts])
    opts = DecodeOptions(beam=10, ctc_weight=0.3)    # the recipe's search
    best = []
    with torch.no_grad():
        enc = model.encode(feats, lens)
        ctc = model.ctc_log_probs(enc.out)
        for b in range(len(cuts)):
            n = int(enc.lens[b])
            args = (model, enc.out[b, :n], ctc[b, :n], tok.sos_id, tok.eos_id, tok.blank_id, opts)
            full = beam_search(*args, incremental=False)
            incremental = beam_search(*args, incremental=True)
            assert [h.tokens for h in incremental] == [h.tokens for h in full], cuts[b].id
            assert [h.score for h in incremental] == pytest.approx([h.score for h in full], abs=1e-4), cuts[b].id
            best.append(tuple(full[0].tokens))
    assert len(set(best)) > len(cuts) // 2 and len(set().union(*best)) >= 4, f"degenerate test: {best}"


def test_a_cut_whose_features_cannot_be_loaded_is_skipped_with_an_empty_hypothesis(trained_an4_model, an4_slice,
                                                                                    tmp_path):
    """Its words count as deletions; the other cuts of its batch are decoded as without it."""
    import dataclasses

    from lhotse import CutSet

    from weakalign.e2e.decode import batches_of, decode_batches

    model, tok = trained_an4_model
    cuts = list(CutSet.from_file(an4_slice.fbank_cuts("test")))[:4]
    broken = cuts[1].with_id("broken")
    broken.features = dataclasses.replace(broken.features, storage_path=str(tmp_path / "gone"))
    opts = DecodeOptions(mode="greedy")
    alone, skipped_alone, _ = decode_batches(model, tok, batches_of(cuts[:1] + cuts[2:], 10_000), opts)
    hyps, skipped, audio_s = decode_batches(model, tok, batches_of(cuts[:1] + [broken] + cuts[2:], 10_000), opts)
    assert skipped_alone == [] and [cid for cid, _ in skipped] == ["broken"]
    assert skipped[0][1].startswith("cannot load features: ")
    assert hyps.pop("broken") == "" and hyps == alone
    assert audio_s == pytest.approx(sum(c.duration for c in cuts[:1] + cuts[2:]))
