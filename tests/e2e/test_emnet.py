"""EM-Network (oracle-guided self-distillation) on the real AN4 slice with tiny models."""

import json

import pytest
import torch
from click.testing import CliRunner
from lhotse import load_manifest

from weakalign.e2e.config import load_config
from weakalign.e2e.data import AsrDataset, cut_text, make_loader
from weakalign.e2e.emnet import (EMNetModel, maskable_positions, mask_oracle_tokens, oracle_targets,
                                 strip_teacher)
from weakalign.e2e.build import build_model, load_for_inference
from weakalign.e2e.init import initialize
from weakalign.e2e.model import E2EModel
from weakalign.e2e.tokenizer import train_bpe
from weakalign.e2e.train import make_optimizer, train, train_step
from weakalign.pipeline.workspace import Workspace

TINY = {"conv_channels": 4, "enc_layers": 2, "enc_hidden": 32, "enc_proj": 32, "dec_embed": 16, "dec_hidden": 24,
        "dec_heads": 2, "emnet_heads": 2, "emnet_ffn": 64, "vocab_size": 40, "max_duration": 30.0,
        "warmup_steps": 20, "lr": 0.01, "keep_best": 2}


@pytest.fixture(scope="module")
def an4_tok(an4_slice, tmp_path_factory):
    cuts = load_manifest(an4_slice.fbank_cuts("train"))
    return train_bpe([cut_text(c) for c in cuts], tmp_path_factory.mktemp("bpe") / "bpe.model", 40)


def _dev_batch(ws, tok, n=4):
    cuts = load_manifest(ws.fbank_cuts("dev"))
    return AsrDataset(tok)[cuts.subset(cut_ids=list(cuts.ids)[:n])]


def _model(name, tok, ws, **extra):
    """The model of config ``name``, initialised as the trainer does (the recipe's ``init``)."""
    torch.manual_seed(0)
    config = {**load_config(name), **TINY, **extra}
    model = build_model(config, tok.vocab_size) if not config.get("emnet") else EMNetModel(config, tok.vocab_size)
    initialize(model, str(config.get("init", "pytorch")))
    model.cmvn.load_stats(ws.fbank_stats)
    return model, config


def test_teacher_output_follows_the_target_and_the_student_does_not(an4_slice, an4_tok):
    model, _ = _model("emnet_hybrid", an4_tok, an4_slice)
    model.eval()
    batch = _dev_batch(an4_slice, an4_tok)
    assert len({tuple(t) for t in batch["tokens"]}) > 1
    other = dict(batch, tokens=batch["tokens"][1:] + batch["tokens"][:1])   # each utterance gets another's text
    with torch.no_grad():
        model(batch)
        student_a, teacher_a, _ = model.last_ctc_outputs
        model(other)
        student_b, teacher_b, lens = model.last_ctc_outputs
    assert torch.equal(student_a, student_b)
    for i, n in enumerate(lens.tolist()):
        assert (teacher_a[i, :n] - teacher_b[i, :n]).abs().max() > 1e-3, f"teacher ignores the target of utt {i}"


def test_masking_replaces_share_p_and_never_sos_eos_padding(an4_slice, an4_tok):
    texts = [cut_text(c) for c in load_manifest(an4_slice.fbank_cuts("train"))]
    tokens = [an4_tok.encode(t) for t in texts]
    V = an4_tok.vocab_size
    sos, mask_id, pad = an4_tok.sos_id, V, V + 1
    ys, lens = oracle_targets(tokens, sos, an4_tok.eos_id, pad)
    maskable = maskable_positions(ys, lens)
    assert int(maskable.sum()) == sum(len(t) for t in tokens)
    gen = torch.Generator().manual_seed(0)
    for p in (0.15, 0.5):
        masked = total = 0
        for _ in range(200):
            out = mask_oracle_tokens(ys, lens, p, mask_id, gen)
            changed = out != ys
            assert not changed[~maskable].any(), "sos, eos or padding was masked"
            assert (out[changed] == mask_id).all()
            masked += int(changed.sum())
            total += int(maskable.sum())
        assert abs(masked / total - p) < 0.01, (p, masked / total)
    assert torch.equal(mask_oracle_tokens(ys, lens, 0.0, mask_id), ys)
    full = mask_oracle_tokens(ys, lens, 1.0, mask_id)
    assert (full[maskable] == mask_id).all() and torch.equal(full[~maskable], ys[~maskable])


@pytest.mark.parametrize("name", ["emnet_ctc_aux", "emnet_hybrid"])
def test_student_terms_are_the_plain_models(an4_slice, an4_tok, name):
    """The wrapper's student loss is E2EModel.forward's, on the same weights and batch."""
    from tests.e2e.standin_alignments import NUM_STANDIN_SENONES

    model, config = _model(name, an4_tok, an4_slice, num_senones=NUM_STANDIN_SENONES, aux_layer=1)
    plain = E2EModel(config, an4_tok.vocab_size)
    plain.load_state_dict(model.student_state_dict())
    model.eval(), plain.eval()
    batch = _dev_batch(an4_slice, an4_tok)
    if config["aux"] != "none":   # stand-in labels just for the loss plumbing: frame index mod K
        batch["senone"] = (torch.arange(batch["feats"].shape[1]) % NUM_STANDIN_SENONES).repeat(len(batch["tokens"]), 1)
    with torch.no_grad():
        loss, stats = model(batch)
        plain_loss, plain_stats = plain(batch)
    for key in ("loss_ctc", "loss_att", "loss_aux"):
        if key in plain_stats:
            assert stats[key] == pytest.approx(plain_stats[key], rel=1e-6), key
    assert stats["loss_student"] == pytest.approx(plain_loss.item(), rel=1e-6)
    kd = stats["loss_kd_ctc"] + stats.get("loss_kd_att", 0.0)
    w = config["ctc_weight"]  # the teacher's terms carry the student's weights by default
    teacher = w * stats["loss_ctc_teacher"] + (1 - w) * stats.get("loss_att_teacher", 0.0)
    assert loss.item() == pytest.approx(plain_loss.item() + teacher + config["emnet_alpha"] * kd, rel=1e-5)


@pytest.mark.parametrize("name", ["emnet_ctc", "emnet_hybrid"])
def test_matched_control_repeats_the_students_terms_without_an_oracle(an4_slice, an4_tok, name):
    """emnet_oracle: false = the same loss weights on the student's own outputs: no teacher modules,
    no KD; with the default teacher weights the hybrid control is exactly twice the student's loss."""
    model, config = _model(name, an4_tok, an4_slice, emnet_oracle=False)
    assert model.emnet is None and model.teacher_parameter_counts()["total"] == 0
    assert sorted(model.state_dict()) == sorted(E2EModel(config, an4_tok.vocab_size).state_dict())
    model.eval()
    with torch.no_grad():
        loss, stats = model(_dev_batch(an4_slice, an4_tok))
    w = config["ctc_weight"]
    assert stats["loss_ctc_teacher"] == pytest.approx(stats["loss_ctc_student"], rel=1e-6)
    assert stats["loss_kd"] == 0.0
    expected = stats["loss_student"] + w * stats["loss_ctc"] + (1 - w) * stats.get("loss_att_teacher", 0.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    if config["emnet_aed"]:
        assert loss.item() == pytest.approx(2 * stats["loss_student"], rel=1e-6)


def test_unit_teacher_weights_and_a_bad_mode(an4_slice, an4_tok):
    model, config = _model("emnet_hybrid", an4_tok, an4_slice, emnet_teacher_weights="unit")
    model.eval()
    with torch.no_grad():
        loss, stats = model(_dev_batch(an4_slice, an4_tok))
    teacher = stats["loss_ctc_teacher"] + stats["loss_att_teacher"]
    assert loss.item() == pytest.approx(stats["loss_student"] + teacher + config["emnet_alpha"] * stats["loss_kd"],
                                        rel=1e-5)
    with pytest.raises(ValueError, match="emnet_teacher_weights"):
        _model("emnet_hybrid", an4_tok, an4_slice, emnet_teacher_weights="paper")


def test_teacher_parameters_and_own_head(an4_slice, an4_tok):
    shared, _ = _model("emnet_ctc_only", an4_tok, an4_slice)
    own, _ = _model("emnet_ctc_only", an4_tok, an4_slice, emnet_teacher_own_head=True)
    d, V = TINY["enc_proj"], an4_tok.vocab_size
    assert shared.teacher_parameter_counts()["head"] == 0
    assert own.teacher_parameter_counts()["total"] - shared.teacher_parameter_counts()["total"] == d * V + V
    n_all = sum(p.numel() for p in shared.parameters())
    n_student = sum(p.numel() for p in E2EModel(shared.config, V).parameters())
    assert n_all - n_student == shared.teacher_parameter_counts()["total"]


def test_teacher_dev_ctc_loss_falls_below_the_students_on_real_an4(an4_slice, an4_tok):
    model, config = _model("emnet_ctc_only", an4_tok, an4_slice, specaug=False)
    loader, sampler = make_loader(load_manifest(an4_slice.fbank_cuts("train")), an4_tok, 30.0, shuffle=True, seed=1)
    batches = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches += list(loader)
    dev_loader, _ = make_loader(load_manifest(an4_slice.fbank_cuts("dev")), an4_tok, 30.0, shuffle=False)
    dev = list(dev_loader)

    def dev_losses(shuffle_targets=False):
        model.eval()
        out = {"student": 0.0, "teacher": 0.0}
        with torch.no_grad():
            for b in dev:
                if shuffle_targets:   # the oracle sees other utterances' texts; CTC still scores the true ones
                    from weakalign.e2e.losses import ctc_loss

                    enc = model.encode(b["feats"], b["feat_lens"])
                    wrong = b["tokens"][1:] + b["tokens"][:1]
                    lp = model.teacher_ctc_log_probs(enc, wrong)
                    out["teacher"] += ctc_loss(lp, enc.lens, b["tokens"]).item() / len(dev)
                    continue
                _, stats = model(b)
                out["student"] += stats["loss_ctc_student"] / len(dev)
                out["teacher"] += stats["loss_ctc_teacher"] / len(dev)
        model.train()
        return out

    optimizer, scheduler = make_optimizer(model, config)
    # 500 steps: from the recipe's LeCun init the teacher's attention layers need ~400 to pull ahead here.
    for step in range(500):
        train_step(model, batches[step % len(batches)], optimizer, scheduler, grad_clip=5.0)
    after = dev_losses()
    assert after["teacher"] < 0.95 * after["student"], after
    # The teacher's edge comes from the oracle: with the wrong transcripts it loses it.
    assert dev_losses(shuffle_targets=True)["teacher"] > after["teacher"] + 0.05, after


def test_trainer_run_saves_the_student_only_and_logs_each_term(an4_slice, tmp_path):
    ws = Workspace("an4", data_root=an4_slice.data_root, exp_root=tmp_path / "exp")
    config = {**load_config("emnet_hybrid"), **TINY, "epochs": 2}
    run_dir = ws.exp / "e2e" / "emnet_hybrid"
    train(ws, config, run_dir, device="cpu", max_steps_per_epoch=2, progress=False)

    avg = torch.load(run_dir / "model_avg.pt", map_location="cpu", weights_only=False)
    plain = build_model(avg["config"], avg["vocab_size"], student_only=True)
    assert type(plain) is E2EModel
    assert {k: v.shape for k, v in avg["state_dict"].items()} == {k: v.shape for k, v in plain.state_dict().items()}
    full = torch.load(run_dir / "checkpoints" / "epoch-2.pt", map_location="cpu", weights_only=False)["model"]
    assert any(k.startswith("emnet.") for k in full) and strip_teacher(full).keys() == avg["state_dict"].keys()
    model, tok, cfg = load_for_inference(run_dir, "cpu")
    assert cfg["emnet"] and type(model) is E2EModel

    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for split in ("train", "dev"):
        assert set(rows[-1][split]) >= {"loss", "loss_ctc_student", "loss_ctc_teacher", "loss_kd", "loss_kd_ctc",
                                        "loss_att_student", "loss_att_teacher", "loss_kd_att"}, split
    assert {"wer", "wer_student", "wer_teacher"} <= set(rows[-1]["dev"])
    assert rows[-1]["dev"]["wer"] == rows[-1]["dev"]["wer_student"]
    assert (run_dir / "emnet_curves.png").stat().st_size > 0 and (run_dir / "loss_curves.png").exists()

    # The posterior figure, through the CLI (the run itself doubles as the reference run here).
    from weakalign.pipeline.cli import cli

    dev_id = next(iter(load_manifest(ws.fbank_cuts("dev")))).id
    result = CliRunner().invoke(cli, ["emnet-plot", "an4", "emnet_hybrid", "--data-root", str(ws.data_root),
                                      "--exp-root", str(ws.exp_root), "--ref-run", "emnet_hybrid",
                                      "--utt", dev_id, "--nj", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (run_dir / "emnet_posteriors.png").stat().st_size > 0


@pytest.mark.parametrize("detach", [False, True])
def test_kd_gradient_reaches_the_teacher_unless_detached(an4_slice, an4_tok, detach):
    batch = _dev_batch(an4_slice, an4_tok)

    def teacher_grads(alpha):
        model, _ = _model("emnet_hybrid", an4_tok, an4_slice, emnet_alpha=alpha, emnet_detach_teacher=detach)
        model.eval()      # no dropout: both passes see the same function
        loss, _ = model(batch)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.emnet.fusion.parameters()]), model.ctc_head.weight.grad

    (t0, s0), (t2, s2) = teacher_grads(0.0), teacher_grads(2.0)
    assert not torch.allclose(s0, s2), "the KD term must reach the student"
    assert torch.allclose(t0, t2, atol=1e-7) == detach
