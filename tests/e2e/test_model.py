"""The E2E model against docs/E2E_INTERFACE.md, on real AN4 fbank batches with a tiny model."""

import pytest
import torch
from lhotse import load_manifest

from weakalign.align.loader import subsample_labels, subsampled_lengths
from weakalign.e2e.config import CONFIGS, load_config
from weakalign.e2e.data import AsrDataset, count_senones
from weakalign.e2e.build import build_model
from weakalign.e2e.model import AUX_TARGETS
from weakalign.e2e.tokenizer import train_bpe
from weakalign.e2e.data import cut_text

from .standin_alignments import NUM_STANDIN_SENONES, an4_standin_ali  # noqa: F401  (fixture)

TINY = {"conv_channels": 4, "enc_hidden": 16, "enc_proj": 12, "dec_embed": 8, "dec_hidden": 16, "dec_heads": 2}


@pytest.fixture(scope="module")
def batch_and_tok(an4_standin_ali, tmp_path_factory):
    cuts = load_manifest(an4_standin_ali.ali_cuts("train"))
    tok = train_bpe([cut_text(c) for c in cuts], tmp_path_factory.mktemp("bpe") / "bpe.model", 40)
    batch = AsrDataset(tok)[cuts.subset(first=6)]
    return batch, tok


def tiny(name, **extra):
    return {**load_config(name), **TINY, "num_senones": NUM_STANDIN_SENONES, **extra}


def test_encode_follows_the_interface(batch_and_tok):
    batch, tok = batch_and_tok
    torch.manual_seed(0)
    model = build_model(tiny("baseline"), tok.vocab_size).eval()
    enc = model.encode(batch["feats"], batch["feat_lens"])
    assert torch.equal(enc.lens, subsampled_lengths(batch["feat_lens"]))
    assert enc.out.shape == (6, int(enc.lens.max()), TINY["enc_proj"])
    assert len(enc.layers) == 6 and enc.layers[-1] is enc.out
    lp = model.ctc_log_probs(enc.out)
    assert lp.shape == (6, enc.out.shape[1], tok.vocab_size)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(lp.shape[:2]), atol=1e-5)
    ys_in = torch.tensor([[tok.sos_id] + batch["tokens"][0]])
    logits = model.decoder(ys_in, torch.tensor([ys_in.shape[1]]), enc.out[:1], enc.lens[:1])
    assert logits.shape == (1, ys_in.shape[1], tok.vocab_size)
    # eval mode: no SpecAugment, so encoding is deterministic
    assert torch.equal(model.encode(batch["feats"], batch["feat_lens"]).out, enc.out)
    model.train()
    assert not torch.equal(model.encode(batch["feats"], batch["feat_lens"]).out, enc.out)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_gives_its_loss_terms(batch_and_tok, name):
    batch, tok = batch_and_tok
    torch.manual_seed(0)
    model = build_model(tiny(name), tok.vocab_size)
    loss, stats = model(batch)
    assert torch.isfinite(loss)
    expected = {"loss", "loss_ctc"}
    cfg = model.config
    if cfg["ctc_weight"] < 1:
        expected |= {"loss_att", "acc"}
    else:
        assert model.decoder is None
    if cfg["aux"] != "none":
        expected.add("loss_aux")
    if cfg["aux"] in ("smoothed_ce", "onehot_ce"):
        expected.add("aux_acc")
    assert set(stats) == expected
    total = (1 - cfg["ctc_weight"]) * stats.get("loss_att", 0.0) + cfg["ctc_weight"] * stats["loss_ctc"] \
        + (cfg["aux_weight"] if cfg["aux"] != "none" else 0.0) * stats.get("loss_aux", 0.0)
    assert stats["loss"] == pytest.approx(total, rel=1e-5)


def test_aux_loss_sits_at_its_layer(batch_and_tok):
    """The aux CE's gradient reaches layers 1..aux_layer and none above."""
    batch, tok = batch_and_tok
    for layer in (1, 3):
        model = build_model(tiny("aux_ls0.5_l3", aux_layer=layer, specaug=False, enc_dropout=0.0), tok.vocab_size)
        enc = model.encode(batch["feats"], batch["feat_lens"])
        loss_aux, _ = model._aux_loss(enc, batch, batch["feats"].shape[1])
        loss_aux.backward()
        for k, blstm in enumerate(model.encoder.layers, start=1):
            g = blstm.fwd.weight_ih_l0.grad
            has_grad = g is not None and g.abs().sum().item() > 0
            assert has_grad == (k <= layer), f"aux at layer {layer}: layer {k} gradient {has_grad}"


def test_aux_ce_needs_senones_and_no_time_warp(batch_and_tok):
    batch, tok = batch_and_tok
    model = build_model(tiny("aux_ls0.5_l3"), tok.vocab_size)
    with pytest.raises(ValueError, match="senone"):
        model({k: v for k, v in batch.items() if k != "senone"})
    with pytest.raises(ValueError, match="time warp"):
        build_model(tiny("aux_ls0.5_l3", time_warp=5, specaug=True), tok.vocab_size)
    build_model(tiny("baseline", time_warp=5), tok.vocab_size)   # fine without an alignment loss


@pytest.fixture(scope="module")
def real_senone_batch(an4_slice_exported, batch_and_tok):
    """8 cuts of the exported slice with their real tri1 senones, and the senone count."""
    cuts = load_manifest(an4_slice_exported.ali_cuts("train")).subset(first=8)
    return AsrDataset(batch_and_tok[1])[cuts], count_senones(cuts)


def share_of(targets: torch.Tensor, senone: int) -> float:
    kept = targets[targets != -100]
    return (kept == senone).float().mean().item()


@pytest.mark.parametrize("mode", AUX_TARGETS)
def test_every_aux_targets_mode_trains_on_real_senones(real_senone_batch, batch_and_tok, mode):
    batch, num_senones = real_senone_batch
    vocab = batch_and_tok[1].vocab_size
    torch.manual_seed(0)
    model = build_model(tiny("aux_ls0.5_l3", aux_targets=mode, num_senones=num_senones), vocab)
    loss, stats = model(batch)
    assert torch.isfinite(loss) and 0.0 < stats["loss_aux"] < float("inf")
    loss.backward()
    grad = model.aux_head.weight.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    # aux_acc is against the mode's hard label (majority for soft). A head that always answers
    # senone s scores the share of s among those labels; pick the s where centre and majority
    # labels disagree most, so the two expectations differ.
    hard = {m: subsample_labels(batch["senone"], batch["feat_lens"], mode=m) for m in ("centre", "majority")}
    s = max(range(num_senones), key=lambda k: abs(share_of(hard["centre"], k) - share_of(hard["majority"], k)))
    assert share_of(hard["centre"], s) != share_of(hard["majority"], s)
    with torch.no_grad():
        model.aux_head.weight.zero_()
        model.aux_head.bias.zero_()
        model.aux_head.bias[s] = 1.0
    _, stats = model.eval()(batch)
    expected = share_of(hard["centre" if mode == "centre" else "majority"], s)
    assert stats["aux_acc"] == pytest.approx(expected, abs=1e-6)


def test_soft_and_majority_losses_differ_on_real_senones(real_senone_batch, batch_and_tok):
    """Same weights and batch (eval mode): the soft histogram target is not the majority one-hot."""
    batch, num_senones = real_senone_batch
    losses = {}
    for mode in AUX_TARGETS:
        torch.manual_seed(0)
        model = build_model(tiny("aux_onehot_l3", aux_targets=mode, num_senones=num_senones),
                            batch_and_tok[1].vocab_size).eval()
        losses[mode] = model(batch)[1]["loss_aux"]
    assert len({round(v, 6) for v in losses.values()}) == 3, losses


def test_aux_targets_is_checked():
    with pytest.raises(ValueError, match=r"aux_targets must be one of \('centre', 'majority', 'soft'\)"):
        build_model({**TINY, "aux_targets": "median"}, 12)


def test_senone_ctc_is_ctc_over_the_collapsed_40ms_senones(real_senone_batch, batch_and_tok):
    """aux: senone_ctc = F.ctc_loss of the layer-3 head against each cut's centre labels with runs
    collapsed (senone k as class k + 1, blank 0); its gradient stops at layer 3."""
    batch, num_senones = real_senone_batch
    torch.manual_seed(0)
    model = build_model(tiny("aux_senonectc_l3", num_senones=num_senones, specaug=False, enc_dropout=0.0),
                        batch_and_tok[1].vocab_size)
    assert model.aux_head.out_features == num_senones + 1
    enc = model.encode(batch["feats"], batch["feat_lens"])
    loss, acc = model._aux_loss(enc, batch, batch["feats"].shape[1])
    assert acc is None

    centre = subsample_labels(batch["senone"], batch["feat_lens"])
    targets = []
    for row, n in zip(centre, enc.lens):
        labels = row[:n].tolist()
        collapsed = [k + 1 for i, k in enumerate(labels) if i == 0 or labels[i - 1] != k]
        assert len(collapsed) <= n   # always a feasible CTC target at the encoder rate
        targets.append(collapsed)
    assert max(len(t) for t in targets) > 5   # real sequences, not one label each
    log_probs = torch.log_softmax(model.aux_head(enc.layers[2]), dim=-1)
    expected = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), torch.tensor([k for t in targets for k in t]), enc.lens,
        torch.tensor([len(t) for t in targets]), blank=0, reduction="mean", zero_infinity=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 < loss.item() < float("inf")

    loss.backward()
    for k, blstm in enumerate(model.encoder.layers, start=1):
        g = blstm.fwd.weight_ih_l0.grad
        assert (g is not None and g.abs().sum().item() > 0) == (k <= 3), f"layer {k}"
