"""compare's fairness checks, the pooled permutation column, publish, and tables from results/.

The run dirs are fakes but consistent: real reference texts per utterance, hypotheses made
by injecting errors with a seeded generator, scored by the scorer (``score_split_dir``),
``results.json`` written the way ``weakalign score`` writes it (the run's ``training.json``
under ``"training"``), plus the files a trained run has that must never be published.
"""

import json
import random
import shutil

import pytest
from click.testing import CliRunner

from weakalign.e2e.compare import (MixedRunsError, check_comparable, compare, fairness_problems, format_table,
                                   resolve_systems, results_section, runs_root)
from weakalign.e2e.publish import MAX_PLOT_BYTES, publish
from weakalign.e2e.score import score_split_dir, write_run_results
from weakalign.e2e.scoring import split_results, write_trn
from weakalign.pipeline.io import read_json, write_json

from .test_significance import inject_errors

VOCAB = "A B C D E F G H ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE ENTER ERASE RUBOUT".split()
DIGEST = "3f2a" + "0" * 36
OTHER_DIGEST = "9c0d" + "1" * 36
STOPPING = {"rule": "early_stopping", "criterion": "dev_cer_greedy", "patience": 8, "max_epochs": 80}


def references(split: str, n: int = 60) -> dict[str, str]:
    rng = random.Random(split)
    return {f"spk{i % 5}-{split}{i:03d}": " ".join(rng.choice(VOCAB) for _ in range(rng.randint(2, 7)))
            for i in range(n)}


def training(seed=1, digest=DIGEST, cuts="ali", stopping=STOPPING, criterion="dev_cer_greedy") -> dict:
    return {"config_name": "x", "seed": seed, "threads": 1, "world_size": 1, "device": "cpu", "cuts": cuts,
            "alignment_digest": digest, "updates": 100, "epochs_run": 10, "stopped_early": True,
            "stopping": dict(stopping), "selection": {"criterion": criterion, "keep_best": 5,
                                                      "averaged_epochs": [5, 6, 7, 8, 9]},
            "train_seconds": 12.5}


def make_run(root, name: str, share: float, seed: int | None = 1, record: dict | None = None,
             big_plot: bool = False, splits=("dev", "test")):
    """A scored run dir under ``root``: decode_greedy/<split> (dev, test), results.json, the training record."""
    run = root / name
    results = {}
    for split in splits:
        split_dir = run / "decode_greedy" / split
        refs = references(split)
        write_trn(split_dir / "ref.trn", refs)
        write_trn(split_dir / "hyp.trn", inject_errors(refs, share, seed=f"{name}/{split}", per_utt=1))
        (split_dir / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(refs)))
        write_json(split_dir / "decode.json", {"rtf": 0.1})
        r = score_split_dir(split_dir, replicas=200)["result"]
        r["hyp_trn"], r["ref_trn"] = f"decode_greedy/{split}/hyp.trn", f"decode_greedy/{split}/ref.trn"
        results[split] = {**r, "decode": {"mode": "greedy"}, "rtf": 0.1, "device": "cpu"}
    if record is not None:
        write_json(run / "training.json", record)
    (run / "config.yaml").write_text(f"name: {name}\nseed: {seed}\n")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "dev_loss": 1.0}) + "\n")
    (run / "RESULTS.md").write_text(f"# RESULTS: {name}\n")
    (run / "loss_curves.png").write_bytes(b"\x89PNG" + b"\0" * (MAX_PLOT_BYTES if big_plot else 100))
    (run / "model_avg.pt").write_bytes(b"weights")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-1.pt").write_bytes(b"weights")
    (run / "bpe.model").write_bytes(b"spm")
    write_json(run / "decode_greedy" / "results.json", results)
    write_run_results(run, results)
    return run


@pytest.fixture
def e2e_dir(tmp_path):
    """Three seeds of a baseline and of a better system, trained alike."""
    root = tmp_path / "exp" / "an4" / "e2e"
    for seed in (1, 2, 3):
        make_run(root, f"baseline_seed{seed}", 0.5, seed, training(seed))
        make_run(root, f"aux_ls0.5_l3_seed{seed}", 0.15, seed, training(seed))
    return root


def test_results_json_carries_the_training_record_and_readers_skip_it(e2e_dir):
    run = e2e_dir / "baseline_seed1"
    results = read_json(run / "results.json")
    assert results["training"] == read_json(run / "training.json")
    assert sorted(split_results(results)) == ["dev", "test"]
    # A run without training.json: results.json is splits only.
    (run / "training.json").unlink()
    write_run_results(run, split_results(results))
    assert "training" not in read_json(run / "results.json")


def test_fair_groups_compare_with_pooled_permutation_column(e2e_dir):
    systems = resolve_systems(e2e_dir, ["baseline_seed*", "aux_ls0.5_l3_seed*"], group_seeds=True)
    assert [s.name for s in systems] == ["baseline_seed*", "aux_ls0.5_l3_seed*"]
    assert check_comparable(systems) == []  # 3 seeds each, same training conditions: no warning
    rows = compare(systems, "test", replicas=500, permutations=2000)
    assert [r["n"] for r in rows] == [3, 3]
    assert rows[0]["p_perm"] is None and rows[1]["p_perm_pairing"] == "3 seed pairs"
    assert rows[1]["wer"] < rows[0]["wer"] and rows[1]["p_value"] < 0.01 and rows[1]["p_perm"] < 0.01
    table = format_table(rows)
    assert table.splitlines()[0] == ("| system | n | test WER (%) | 95% CI | rel. vs baseline_seed* | "
                                     "p vs baseline_seed* | p_perm vs baseline_seed* |")
    assert "warning" not in table
    # Other seeds on one side: the test falls back to the seed-averaged differences.
    make_run(e2e_dir, "other_seed7", 0.15, 7, training(7))
    rows = compare(resolve_systems(e2e_dir, ["baseline_seed*", "other_seed7"]), "test", allow_mixed=False)
    assert rows[1]["p_perm_pairing"] == "seed-averaged"


def test_compare_refuses_mixed_alignment_sets(e2e_dir):
    make_run(e2e_dir, "realigned_seed1", 0.15, 1, training(1, digest=OTHER_DIGEST))
    systems = resolve_systems(e2e_dir, ["baseline_seed1", "realigned_seed1"])
    with pytest.raises(MixedRunsError, match=r"different alignment sets: baseline_seed1 \(3f2a0000…\) vs "
                                             r"realigned_seed1 \(9c0d1111…\); pass --allow-mixed"):
        compare(systems, "test")
    # fbank cuts (no digest) vs alignment cuts of the same utterances: a different cut list too.
    make_run(e2e_dir, "fbank_seed1", 0.15, 1, training(1, digest=None, cuts="fbank"))
    with pytest.raises(MixedRunsError, match=r"different cuts: baseline_seed1 \(ali cuts\) vs fbank_seed1 \(fbank cuts\)"):
        compare(resolve_systems(e2e_dir, ["baseline_seed1", "fbank_seed1"]), "test")
    # A mismatch inside a group counts as well; runs sharing a value are named together.
    with pytest.raises(MixedRunsError, match=r"alignment sets: aux_ls0.5_l3_seed1, aux_ls0.5_l3_seed2, "
                                             r"aux_ls0.5_l3_seed3, baseline_seed1, baseline_seed2, baseline_seed3 "
                                             r"\(3f2a0000…\) vs realigned_seed1 \(9c0d1111…\)"):
        compare(resolve_systems(e2e_dir, ["aux_ls0.5_l3_seed*", "realigned_seed1", "baseline_seed*"],
                                group_seeds=True), "test")
    rows = compare(systems, "test", replicas=200, allow_mixed=True)
    assert len(rows) == 2 and rows[1]["p_perm"] is not None


def _set_aux(run, aux: str):
    (run / "config.yaml").write_text(f"name: {run.name}\nseed: 1\naux: {aux}\n")


def test_runs_whose_loss_does_not_read_the_alignments_compare_across_alignment_sets(e2e_dir):
    """A baseline or EM-Network run trains on the same bytes whatever labels its cuts carry: its
    alignment digest binds nothing. Systems that read the labels still must share one set."""
    old_style = make_run(e2e_dir, "emnet_seed1", 0.3, 1, training(1, digest=OTHER_DIGEST))
    _set_aux(old_style, "none")                     # a record from before reads_alignments: the config says
    new_style = make_run(e2e_dir, "emnet_seed2", 0.3, 2, {**training(2, digest=OTHER_DIGEST),
                                                         "reads_alignments": False})
    aux = ["aux_ls0.5_l3_seed1", "aux_ls0.5_l3_seed2", "aux_ls0.5_l3_seed3"]
    systems = resolve_systems(e2e_dir, aux + [old_style.name, new_style.name])
    assert fairness_problems(systems) == []
    # The same run reading the alignments (its config's aux, or its record) is refused.
    _set_aux(old_style, "smoothed_ce")
    with pytest.raises(MixedRunsError, match=r"loss reads the alignments trained on different alignment sets: "
                                             r"aux_ls0.5_l3_seed1, aux_ls0.5_l3_seed2, aux_ls0.5_l3_seed3 "
                                             r"\(3f2a0000…\) vs emnet_seed1 \(9c0d1111…\)"):
        check_comparable(systems)
    _set_aux(old_style, "none")
    write_json(new_style / "training.json", {**training(2, digest=OTHER_DIGEST), "reads_alignments": True})
    write_run_results(new_style, split_results(read_json(new_style / "results.json")))
    assert any("emnet_seed2 (9c0d1111…)" in p for p in fairness_problems(systems))


def test_a_recorded_cut_list_binds_where_both_runs_have_it(e2e_dir):
    a = make_run(e2e_dir, "a_seed1", 0.3, 1, {**training(1), "cut_list_digest": "ab" * 20})
    b = make_run(e2e_dir, "b_seed1", 0.3, 1, {**training(1), "cut_list_digest": "cd" * 20})
    assert fairness_problems(resolve_systems(e2e_dir, ["baseline_seed1", a.name])) == []   # one unrecorded
    assert fairness_problems(resolve_systems(e2e_dir, [a.name, b.name])) == [
        "runs trained on different cut lists: a_seed1 (abababab…) vs b_seed1 (cdcdcdcd…)"]


def test_compare_refuses_mixed_stopping_rules_selection_and_missing_records(e2e_dir):
    make_run(e2e_dir, "fixed_seed1", 0.15, 1, training(1, stopping={"rule": "fixed_epochs", "max_epochs": 80}))
    with pytest.raises(MixedRunsError, match=r"different stopping rules: baseline_seed1 \(rule=early_stopping, "
                                             r"criterion=dev_cer_greedy, patience=8, max_epochs=80\) vs "
                                             r"fixed_seed1 \(rule=fixed_epochs, max_epochs=80\)"):
        compare(resolve_systems(e2e_dir, ["baseline_seed1", "fixed_seed1"]), "test")
    make_run(e2e_dir, "byloss_seed1", 0.15, 1, training(1, criterion="dev_loss"))
    with pytest.raises(MixedRunsError, match=r"selected by different criteria: .*byloss_seed1 \(dev_loss\)"):
        compare(resolve_systems(e2e_dir, ["baseline_seed1", "byloss_seed1"]), "test")
    make_run(e2e_dir, "old_seed1", 0.15, 1, None)
    with pytest.raises(MixedRunsError, match="without a training record .*: old_seed1"):
        compare(resolve_systems(e2e_dir, ["baseline_seed1", "old_seed1"]), "test")


def test_cli_refuses_then_allow_mixed_warns_above_the_table(e2e_dir, tmp_path):
    from weakalign.pipeline.cli import cli

    make_run(e2e_dir, "realigned_seed1", 0.15, 1, training(1, digest=OTHER_DIGEST))
    args = ["compare", "baseline_seed1", "realigned_seed1", "--corpus", "an4",
            "--exp-root", str(tmp_path / "exp"), "--replicas", "200", "--out", str(tmp_path / "cmp.md")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0
    assert "trained on different alignment sets: baseline_seed1 (3f2a0000…) vs realigned_seed1 (9c0d1111…)" \
        in refused.output and "--allow-mixed" in refused.output
    assert not (tmp_path / "cmp.md").exists()
    allowed = CliRunner().invoke(cli, args + ["--allow-mixed"])
    assert allowed.exit_code == 0, allowed.output
    lines = allowed.output.splitlines()
    table_start = next(i for i, line in enumerate(lines) if line.startswith("| system | n |"))
    warnings = [line for line in lines[:table_start] if line.startswith("> **warning**")]
    assert any("alignment sets" in w for w in warnings)
    assert any("fewer than 3 runs" in w and "baseline_seed1 (n=1)" in w for w in warnings)
    assert "> **warning**: compared anyway (--allow-mixed)" in (tmp_path / "cmp.md").read_text()


PUBLISHED = sorted(["results.json", "metrics.jsonl", "config.yaml", "training.json", "RESULTS.md", "loss_curves.png",
                    *(f"decode_greedy/{s}/{f}" for s in ("dev", "test")
                      for f in ("hyp.trn", "ref.trn", "per_utt.txt", "result.wer.md"))])


def test_publish_copies_exactly_the_listed_files(e2e_dir, tmp_path):
    make_run(e2e_dir, "bigplot_seed1", 0.15, 1, training(1), big_plot=True)
    out = publish("an4", ["baseline_seed*", "bigplot_seed1"], exp_root=tmp_path / "exp",
                  results_root=tmp_path / "results")
    assert sorted(out) == ["baseline_seed1", "baseline_seed2", "baseline_seed3", "bigplot_seed1"]
    dest = tmp_path / "results" / "an4" / "baseline_seed1"
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == PUBLISHED
    assert not list((tmp_path / "results").rglob("*.pt")) and not list((tmp_path / "results").rglob(".tmp*"))
    src = e2e_dir / "baseline_seed1"
    assert all((dest / f).read_bytes() == (src / f).read_bytes() for f in files)
    big = tmp_path / "results" / "an4" / "bigplot_seed1"
    assert (big / "results.json").exists() and not (big / "loss_curves.png").exists()
    # Republishing replaces the copy and drops files the run no longer has.
    (src / "loss_curves.png").unlink()
    publish("an4", ["baseline_seed1"], exp_root=tmp_path / "exp", results_root=tmp_path / "results")
    assert not (dest / "loss_curves.png").exists() and (dest / "results.json").exists()
    # An unscored run is refused before anything is copied.
    (e2e_dir / "unscored_seed1").mkdir()
    with pytest.raises(FileNotFoundError, match="unscored_seed1"):
        publish("an4", ["unscored_seed1"], exp_root=tmp_path / "exp", results_root=tmp_path / "results")
    # Another alignment set's runs of the same names go beside them under a prefix, grouped by it.
    again = publish("an4", ["baseline_seed*"], exp_root=tmp_path / "exp", results_root=tmp_path / "results",
                    prefix="set2_")
    assert sorted(again) == ["set2_baseline_seed1", "set2_baseline_seed2", "set2_baseline_seed3"]
    assert (tmp_path / "results" / "an4" / "set2_baseline_seed2" / "results.json").read_bytes() == \
        (e2e_dir / "baseline_seed2" / "results.json").read_bytes()
    assert [s.name for s in resolve_systems(tmp_path / "results" / "an4", ["set2_baseline_seed1", "set2_baseline_seed2"],
                                            True)] == \
        ["set2_baseline"]
    with pytest.raises(ValueError, match="plain name part"):
        publish("an4", ["baseline_seed1"], exp_root=tmp_path / "exp", results_root=tmp_path / "results",
                prefix="../x")


def test_tables_from_results_equal_tables_from_exp(e2e_dir, tmp_path):
    from weakalign.pipeline.cli import cli

    runner = CliRunner()
    done = runner.invoke(cli, ["publish", "an4", "baseline_seed*", "aux_ls0.5_l3_seed*",
                               "--exp-root", str(tmp_path / "exp"), "--results-root", str(tmp_path / "results")])
    assert done.exit_code == 0, done.output
    common = ["compare", "baseline_seed*", "aux_ls0.5_l3_seed*", "--corpus", "an4", "--group", "--replicas", "300",
              "--permutations", "500"]
    from_exp = runner.invoke(cli, common + ["--exp-root", str(tmp_path / "exp"), "--out", str(tmp_path / "a.md")])
    shutil.rmtree(tmp_path / "exp")  # no exp/ at all
    from_results = runner.invoke(cli, common + ["--from-results", "--results-root", str(tmp_path / "results"),
                                                "--out", str(tmp_path / "b.md")])
    assert from_exp.exit_code == 0 and from_results.exit_code == 0, from_results.output
    assert "| aux_ls0.5_l3_seed* | 3 |" in from_exp.output
    assert (tmp_path / "a.md").read_text() == (tmp_path / "b.md").read_text()
    assert runs_root("an4", results_root=tmp_path / "results", from_results=True) == tmp_path / "results" / "an4"


def test_results_table_from_results_groups_seeds_with_p_vs_baseline(e2e_dir, tmp_path):
    from weakalign.pipeline.cli import cli

    publish("an4", ["*"], exp_root=tmp_path / "exp", results_root=tmp_path / "results")
    make_run(tmp_path / "results" / "an4", "ctc_only", 0.3, None, training(1))  # one run, no seed suffix
    out = tmp_path / "RESULTS.md"
    out.write_text("# RESULTS\n\nhand-written text stays\n")
    done = CliRunner().invoke(cli, ["results-table", "an4", "--from-results", "--results-root",
                                    str(tmp_path / "results"), "--group", "--out", str(out)])
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert "hand-written text stays" in text
    header = next(line for line in text.splitlines() if line.startswith("| config |"))
    assert header == ("| config | n | dev WER (%) | test WER (%) | test 95% CI | test CER (%) | p vs baseline | "
                      "p_perm vs baseline | decoding |")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| config")]
    assert [r.split(" | ")[0] for r in rows] == ["| baseline", "| aux_ls0.5_l3", "| ctc_only"]
    assert rows[0].split(" | ")[1] == "3" and " ± " in rows[0].split(" | ")[3]
    base, aux, ctc = (r.split(" | ") for r in rows)
    assert base[6] == base[7] == "—" and aux[6] == aux[7] == "<0.001" and ctc[1] == "1"
    assert "> **warning**: fewer than 3 runs (seeds): ctc_only (n=1)" in text
    assert "weakalign publish an4" in text and "--from-results" in text
    # The same section from the Python API, and a mixed run is refused there too.
    systems = resolve_systems(tmp_path / "results" / "an4", ["baseline_seed1", "baseline_seed2"], group_seeds=True)
    assert "| baseline | 2 |" in results_section("an4", systems, env={"python": "3"})
    make_run(tmp_path / "results" / "an4", "zz_seed1", 0.3, 1, training(1, digest=OTHER_DIGEST))
    refused = CliRunner().invoke(cli, ["results-table", "an4", "--from-results", "--results-root",
                                       str(tmp_path / "results"), "--group", "--out", str(out)])
    assert refused.exit_code != 0 and "different alignment sets" in refused.output


def test_a_corpus_without_a_test_set_reports_dev_with_its_p_values(tmp_path):
    """speechocean762 before its test half is added: dev is the set of the CI and p-value columns."""
    root = tmp_path / "results" / "speechocean762"
    for seed in (1, 2, 3):
        make_run(root, f"baseline_seed{seed}", 0.5, seed, training(seed), splits=("dev",))
        make_run(root, f"aux_ls0.5_l3_seed{seed}", 0.2, seed, training(seed), splits=("dev",))
    runs = [f"{config}_seed{seed}" for config in ("baseline", "aux_ls0.5_l3") for seed in (1, 2, 3)]
    systems = resolve_systems(root, runs, group_seeds=True)
    assert [(s.name, len(s.run_dirs)) for s in systems] == [("baseline", 3), ("aux_ls0.5_l3", 3)]
    text = results_section("speechocean762", systems, env={"python": "3"}, replicas=200, permutations=200)
    header = next(line for line in text.splitlines() if line.startswith("| config |"))
    assert header == ("| config | n | dev WER (%) | dev 95% CI | dev CER (%) | p vs baseline | p_perm vs baseline | "
                      "decoding |")
    aux = next(line for line in text.splitlines() if line.startswith("| aux_ls0.5_l3 |")).split(" | ")
    assert aux[5] != "—" and aux[6] != "—" and "Both on dev" in text


def test_paper_table_has_p_values_vs_the_best_one_hot_system_in_its_own_section(tmp_path):
    """The paper's table: p vs baseline and vs a second reference (the best one-hot system), in a
    named section beside the corpus' own table (both stay in the file)."""
    from weakalign.pipeline.cli import cli

    root = tmp_path / "results" / "an4"
    for seed in (1, 2, 3):
        make_run(root, f"baseline_seed{seed}", 0.5, seed, training(seed))
        make_run(root, f"onehot_seed{seed}", 0.3, seed, training(seed))
        make_run(root, f"aux_ls0.5_l3_seed{seed}", 0.3, seed, training(seed))
    out = tmp_path / "RESULTS.md"
    common = ["results-table", "an4", "baseline_seed*", "onehot_seed*", "aux_ls0.5_l3_seed*", "--from-results",
              "--results-root", str(tmp_path / "results"), "--group", "--out", str(out)]
    assert CliRunner().invoke(cli, common).exit_code == 0
    done = CliRunner().invoke(cli, common + ["--also-vs", "onehot", "--section", "an4 paper table"])
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert "## an4\n" in text and "## an4 paper table\n" in text
    header = next(line for line in text.split("## an4 paper table")[1].splitlines() if line.startswith("| config |"))
    assert header.endswith("| p vs baseline | p_perm vs baseline | p vs onehot | p_perm vs onehot | decoding |")
    aux = next(line for line in text.split("## an4 paper table")[1].splitlines()
               if line.startswith("| aux_ls0.5_l3 |")).split(" | ")
    # Same error share as onehot: far from baseline, not different from onehot.
    assert aux[6] == "<0.001" and aux[8] not in ("<0.001", "—")
    onehot = next(line for line in text.split("## an4 paper table")[1].splitlines()
                  if line.startswith("| onehot |")).split(" | ")
    assert onehot[8] == onehot[9] == "—"
    bad = CliRunner().invoke(cli, common + ["--also-vs", "nosuch"])
    assert bad.exit_code != 0 and "--also-vs nosuch: not a system" in bad.output


def test_reproducing_commands_name_the_overrides_of_a_sweep_point_and_a_prefixed_run(tmp_path):
    """The Commands block of a results section reproduces each run: `make train score` for a conf/
    config under its own name, `weakalign train --set ... --run NAME` for a sweep point or a run
    published under a prefix; keys the trainer fills in are not requests."""
    import yaml

    from weakalign.e2e.compare import reproducing_commands
    from weakalign.e2e.config import load_config

    def run(name, config, seed, **changes):
        cfg = {**load_config(config, corpus="an4"), "seed": seed, "cuts": "ali", "num_senones": 259, **changes}
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg))
        return tmp_path / name

    assert reproducing_commands("an4", run("aux_ls0.5_l3_seed3", "aux_ls0.5_l3", 3)) == [
        "make train score CORPUS=an4 CONFIG=aux_ls0.5_l3 SEED=3"]
    assert reproducing_commands("an4", run("baseline", "baseline", 1)) == ["make train score CORPUS=an4 CONFIG=baseline"]
    assert reproducing_commands("an4", run("sweep_aux_onehot_l3_w0.3_seed1", "aux_onehot_l3", 1, aux_weight=0.3)) == [
        "weakalign train an4 --config aux_onehot_l3 --seed 1 --set aux_weight=0.3 --run sweep_aux_onehot_l3_w0.3_seed1",
        "weakalign score an4 --run sweep_aux_onehot_l3_w0.3_seed1"]
    assert reproducing_commands("an4", run("paper_baseline_seed2", "baseline", 2))[0] == \
        "weakalign train an4 --config baseline --seed 2 --run paper_baseline_seed2"
    # Without a config.yaml (an old run): the make form from the name.
    (tmp_path / "old_seed2").mkdir()
    assert reproducing_commands("an4", tmp_path / "old_seed2") == ["make train score CORPUS=an4 CONFIG=old SEED=2"]


def test_tables_yaml_gives_one_section_per_alignment_set(tmp_path):
    """`make results` with runs of two alignment sets under results/<c>/: tables.yaml names the
    sections and their runs, so each set gets its own table (one table of both is refused)."""
    from weakalign.pipeline.cli import cli

    root = tmp_path / "results" / "an4"
    for seed in (1, 2, 3):
        make_run(root, f"baseline_seed{seed}", 0.5, seed, training(seed))
        make_run(root, f"aux_ls0.5_l3_seed{seed}", 0.3, seed, training(seed))
        make_run(root, f"paper_baseline_seed{seed}", 0.5, seed, training(seed, digest=OTHER_DIGEST))
        make_run(root, f"paper_onehot_seed{seed}", 0.4, seed, training(seed, digest=OTHER_DIGEST))
    args = ["results-table", "an4", "--from-results", "--results-root", str(tmp_path / "results"), "--group",
            "--out", str(tmp_path / "RESULTS.md")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "different alignment sets" in refused.output
    (root / "tables.yaml").write_text(
        "- section: an4\n  runs: [baseline_seed*, aux_ls0.5_l3_seed*]\n"
        "- section: an4 paper table\n  runs: ['paper_*']\n  baseline: paper_baseline\n  also_vs: [paper_onehot]\n")
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    text = (tmp_path / "RESULTS.md").read_text()
    first, second = text.split("## an4 paper table")
    assert "| baseline | 3 |" in first and "| aux_ls0.5_l3 | 3 |" in first and "paper_" not in first.split("Commands")[0]
    assert "| paper_baseline | 3 |" in second and "| p vs paper_baseline | p_perm vs paper_baseline | p vs paper_onehot |" \
        in second
    (root / "tables.yaml").write_text("- section: x\n  runs: ['nomatch_*']\n")
    missing = CliRunner().invoke(cli, args)
    assert missing.exit_code != 0 and "no scored run matches 'nomatch_*'" in missing.output
