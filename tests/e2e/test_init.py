"""Why the recipe uses LeCun init: with PyTorch's defaults a plain 6-layer projected BLSTM stack
is deaf at the start (its top does not move when the input does; the bottom gets no gradient)."""

import pytest
import torch

from weakalign.e2e.init import initialize
from weakalign.e2e.build import build_model
from weakalign.e2e.model import DEFAULT_MODEL_CONFIG

PLAIN = dict(DEFAULT_MODEL_CONFIG, enc_hidden=256, enc_proj=128, enc_layers=6, enc_residual=False,
             enc_dropout=0.0, specaug=False, ctc_weight=1.0)


def sensitivity_and_bottom_gradient(scheme: str) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(PLAIN, vocab_size=30)
    initialize(model, scheme)
    x, lens = torch.randn(2, 200, 80), torch.tensor([200, 200])
    changed = x.clone()
    changed[:, 100:110] = torch.randn(2, 10, 80)
    model.eval()
    with torch.no_grad():
        top, top_changed = model.encode(x, lens).out, model.encode(changed, lens).out
    sensitivity = float((top - top_changed).abs().mean() / top.abs().mean())
    model.train()
    loss, _ = model({"feats": x, "feat_lens": lens, "tokens": [[1, 2, 3, 4], [5, 6, 7]]})
    loss.backward()
    bottom = torch.sqrt(sum((p.grad ** 2).sum() for p in model.encoder.subsampling.parameters()))
    top_grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.encoder.layers[-1].parameters()))
    return sensitivity, float(bottom / top_grad)


def test_default_init_leaves_the_plain_stack_deaf_and_lecun_does_not():
    deaf, vanishing = sensitivity_and_bottom_gradient("pytorch")
    hearing, flowing = sensitivity_and_bottom_gradient("lecun")
    assert deaf < 1e-3 and vanishing < 1e-3, (deaf, vanishing)
    assert hearing > 0.02 and flowing > 0.1, (hearing, flowing)


def test_lecun_init_statistics():
    model = build_model(PLAIN, vocab_size=30)
    initialize(model, "lecun")
    w = model.encoder.layers[2].fwd.weight_ih_l0
    assert w.std().item() == pytest.approx(128 ** -0.5, rel=0.05)
    b = model.encoder.layers[2].fwd.bias_ih_l0
    assert torch.all(b[256:512] == 1.0) and torch.all(b[:256] == 0.0)
    with pytest.raises(ValueError, match="init"):
        initialize(model, "xavier")


def test_layer_norm_option_normalises_every_layer_output():
    model = build_model(dict(PLAIN, enc_layer_norm=True), vocab_size=30).eval()
    with torch.no_grad():
        enc = model.encode(torch.randn(2, 120, 80), torch.tensor([120, 120]))
    for layer in enc.layers:
        assert layer.std(-1).mean().item() == pytest.approx(1.0, abs=0.05)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in build_model(PLAIN, vocab_size=30).modules())


def test_lecun_keeps_layer_norms_at_unit_scale_so_the_emnet_teacher_hears_its_inputs():
    """Session 12: zeroing LayerNorm's scale as a 'bias' made the EM-Network teacher's oracle and fusion
    output a constant (every state equal, no gradient through them ever again)."""
    from weakalign.e2e.emnet import EMNetModel, oracle_targets

    config = dict(DEFAULT_MODEL_CONFIG, conv_channels=4, enc_hidden=16, enc_proj=16, dec_embed=8, dec_hidden=8,
                  dec_heads=2, emnet=True, emnet_heads=2, emnet_ffn=16, enc_layer_norm=True)
    torch.manual_seed(0)
    model = EMNetModel(config, vocab_size=12)
    initialize(model, "lecun")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) >= 4 + config["enc_layers"]
    for m in norms:
        assert torch.all(m.weight == 1.0) and torch.all(m.bias == 0.0)
    model.eval()
    with torch.no_grad():
        enc = model.encode(torch.randn(2, 60, 80), torch.tensor([60, 48]))
        ys, lens = oracle_targets([[1, 2, 3], [4, 5]], model.sos_id, model.eos_id, model.emnet.oracle.pad_id)
        r, _ = model.emnet.oracle(ys, lens)
        fused = model.teacher_fused(enc, ys, lens)
    assert r.std(1).mean() > 0.1, "oracle states do not vary over the target"
    assert fused[0, :15].std(0).mean() > 0.1, "teacher states do not vary over time"
