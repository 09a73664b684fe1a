"""Early stopping, model selection without the auxiliary loss, the lr schedules and training.json."""

import json

import pytest
import torch
from lhotse import load_manifest

from weakalign.e2e.config import load_config
from weakalign.align.loader import cut_list_digest
from weakalign.e2e.schedule import Scheduler
from weakalign.e2e.stopping import StoppingRule, score
from weakalign.e2e.train import train

from .standin_alignments import an4_standin_ali  # noqa: F401  (fixture)
from .test_train import TINY


def rows(values, key="cer"):
    return [{"epoch": e, "dev": {key: v}} for e, v in enumerate(values, 1)]


def test_stops_after_patience_epochs_without_a_better_score():
    rule = StoppingRule(criterion="cer", patience=3, min_epochs=1, max_epochs=100)
    assert not rule.should_stop(rows([9, 8, 8, 8]))          # ties do not count as better, 2 epochs since
    assert rule.should_stop(rows([9, 8, 8, 8, 8]))
    assert not rule.should_stop(rows([9, 8, 8, 8, 7]))
    assert rule.should_stop(rows([9] * 3)) is False         # min_epochs=1, only 2 epochs since the best
    assert StoppingRule(max_epochs=2).should_stop(rows([9, 1]))
    assert not StoppingRule(patience=1, min_epochs=5).should_stop(rows([1, 2, 3]))


def test_selection_ignores_the_auxiliary_and_teacher_terms():
    base = {"loss_ctc": 2.0, "loss_att": 1.0, "acc": 0.8, "cer": 10.0, "wer": 20.0}
    noisy = {**base, "loss": 99.0, "loss_aux": 97.0, "loss_ctc_teacher": 5.0}
    for criterion in ("cer", "wer", "acc", "loss_main"):
        assert score(base, criterion, 0.5) == score(noisy, criterion, 0.5)
    assert score(base, "loss_main", 0.5) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="criterion"):
        score(base, "loss")
    picked = StoppingRule(criterion="acc").best_epochs(
        [{"epoch": e, "dev": {"acc": a, "loss": l}} for e, (a, l) in enumerate([(0.5, 1), (0.9, 9), (0.7, 2)], 1)], 2)
    assert picked == [2, 3]


def test_plateau_schedule_halves_the_lr_when_the_score_stalls():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    sched = Scheduler(opt, {"lr": 1.0, "warmup_steps": 2, "lr_schedule": "plateau", "lr_patience": 2})
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0
    sched.end_epoch(improved=False)
    assert opt.param_groups[0]["lr"] == 1.0
    sched.end_epoch(improved=False)
    assert opt.param_groups[0]["lr"] == 0.5
    state = sched.state_dict()
    again = Scheduler(opt, {"lr": 1.0, "warmup_steps": 2, "lr_schedule": "plateau", "lr_patience": 2})
    again.load_state_dict(state)
    again.step()
    assert opt.param_groups[0]["lr"] == 0.5


def _kw(ws):
    return dict(device="cpu", max_steps_per_epoch=2, progress=False,
                train_cuts=load_manifest(ws.ali_cuts("train")), dev_cuts=load_manifest(ws.ali_cuts("dev")).subset(first=4))


def test_a_run_that_stops_learning_stops_early_and_resumes_to_the_same_stop(an4_standin_ali, tmp_path):
    # lr 0: the dev score never improves on epoch 1, so patience 2 stops the run after epoch 3.
    config = {**load_config("aux_ls0.5_l3"), **TINY, "lr": 0.0, "epochs": 10, "patience": 2,
              "lr_schedule": "plateau", "select_by": "cer"}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(an4_standin_ali, config, straight, **_kw(an4_standin_ali))
    record = json.loads((straight / "training.json").read_text())
    assert record["epochs_run"] == 3 and record["stopped_early"] and record["updates"] == 6
    assert record["stopping"] == {"rule": "early_stopping", "criterion": "cer", "patience": 2, "min_epochs": 1,
                                  "max_epochs": 10}
    assert record["selection"]["criterion"] == "cer" and record["selection"]["averaged_epochs"] == [1, 2]
    assert record["alignment_digest"] and record["threads"] == torch.get_num_threads()
    # aux_ls0.5_l3 reads the alignments; the cut list is the train + dev cuts the run used.
    assert record["reads_alignments"] is True
    assert record["cut_list_digest"] == cut_list_digest(list(_kw(an4_standin_ali)["train_cuts"])
                                                        + list(_kw(an4_standin_ali)["dev_cuts"]))

    train(an4_standin_ali, config, resumed, epochs=1, **_kw(an4_standin_ali))   # "killed" after epoch 1
    train(an4_standin_ali, config, resumed, **_kw(an4_standin_ali))
    lines = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["epoch"] for r in lines(resumed)] == [1, 2, 3]
    assert [r["dev"] for r in lines(resumed)] == [r["dev"] for r in lines(straight)]
    again = json.loads((resumed / "training.json").read_text())
    assert {k: again[k] for k in ("epochs_run", "updates", "alignment_digest", "stopping", "selection")} == \
        {k: record[k] for k in ("epochs_run", "updates", "alignment_digest", "stopping", "selection")}
    # A finished run is not trained further when run again.
    train(an4_standin_ali, config, straight, **_kw(an4_standin_ali))
    assert len(lines(straight)) == 3 and not (straight / "checkpoints" / "epoch-4.pt").exists()


def test_the_alignment_digest_names_the_labels(an4_standin_ali, tmp_path):
    from weakalign.align.loader import alignment_digest

    cuts = list(load_manifest(an4_standin_ali.ali_cuts("dev")))
    assert alignment_digest(cuts) == alignment_digest(list(reversed(cuts)))
    assert alignment_digest(cuts) != alignment_digest(cuts[1:])
    assert alignment_digest([c.drop_custom("senone") for c in cuts]) is None
