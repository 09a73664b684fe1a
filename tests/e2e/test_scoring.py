"""WER/CER counts follow sclite's conventions; trn files and tables round-trip."""

import math

import pytest

from weakalign.e2e.scoring import (read_trn, score_set, score_trn_dir, sclite_table, split_results,
                                   utterance_errors, write_trn)


def counts(ref, hyp, unit="word"):
    c = utterance_errors(ref, hyp, unit)
    return c.words, c.corr, c.sub, c.dele, c.ins


def test_all_deletion_hypothesis():
    assert counts("A B C", "") == (3, 0, 0, 3, 0)
    assert utterance_errors("A B C", "").wer == 100.0


def test_insertions_in_empty_reference_are_insertions():
    c = utterance_errors("", "UH HUH")
    assert (c.words, c.ins, c.err, c.sentence_errors) == (0, 2, 2, 1)
    assert math.isinf(c.wer)
    assert utterance_errors("", "").wer == 0.0
    # In a set, they add to the errors of the words elsewhere.
    s = score_set({"a": "ONE TWO", "b": ""}, {"a": "ONE TWO", "b": "UH HUH"})
    assert (s.words, s.ins, s.wer, s.sentence_errors) == (2, 2, 100.0, 1)


def test_wer_can_exceed_100_percent():
    assert counts("A", "B C D") == (1, 0, 1, 0, 2)
    assert utterance_errors("A", "B C D").wer == 300.0


def test_sclite_costs_prefer_substitution_over_deletion_plus_insertion():
    # Costs ins 3, del 3, sub 4: one substitution (4) beats a deletion + insertion (6).
    assert counts("A B", "A C") == (2, 1, 1, 0, 0)
    assert counts("THE CAT SAT ON THE MAT", "THE CAT SIT ON MAT") == (6, 4, 1, 1, 0)


def test_case_insensitive_and_characters():
    assert counts("Hello World", "HELLO world") == (2, 2, 0, 0, 0)
    # Characters, spaces dropped: "AB C" vs "ABD" -> 3 ref chars, one substitution.
    assert counts("AB C", "ABD", unit="char") == (3, 2, 1, 0, 0)


def test_set_sums_and_sentence_errors():
    refs = {"u1": "A B C D", "u2": "E F", "u3": "G"}
    hyps = {"u1": "A X C D", "u2": "E F", "u3": "G H"}
    s = score_set(refs, hyps)
    t = s.total
    assert (t.sentences, t.words, t.corr, t.sub, t.dele, t.ins, t.sentence_errors) == (3, 7, 6, 1, 0, 1, 2)
    assert s.wer == pytest.approx(100 * 2 / 7)
    with pytest.raises(ValueError, match="without a hypothesis"):
        score_set(refs, {"u1": "A"})


def test_trn_roundtrip_and_bad_line(tmp_path):
    texts = {"an406-fcaw-b": "RUBOUT G M E F THREE NINE", "empty-utt": ""}
    write_trn(tmp_path / "x.trn", texts)
    assert (tmp_path / "x.trn").read_text().splitlines()[0] == "RUBOUT G M E F THREE NINE (an406-fcaw-b)"
    assert read_trn(tmp_path / "x.trn") == texts
    (tmp_path / "bad.trn").write_text("A B C\n")
    with pytest.raises(ValueError, match="bad.trn:1"):
        read_trn(tmp_path / "bad.trn")


def test_sclite_table_rows_per_speaker(tmp_path):
    refs = {"s1-a": "A B", "s1-b": "C", "s2-a": "D E F G"}
    hyps = {"s1-a": "A B", "s1-b": "", "s2-a": "D E F G H"}
    write_trn(tmp_path / "ref.trn", refs)
    write_trn(tmp_path / "hyp.trn", hyps)
    utt2spk = {u: u.split("-")[0] for u in refs}
    scored = score_trn_dir(tmp_path, utt2spk)
    table = (tmp_path / "result.wer.md").read_text().splitlines()
    assert table[0] == "| SPKR | # Snt | # Wrd | Corr | Sub | Del | Ins | Err | S.Err |"
    assert table[2] == "| s1 | 2 | 3 | 66.7 | 0.0 | 33.3 | 0.0 | 33.3 | 50.0 |"
    assert table[3] == "| s2 | 1 | 4 | 100.0 | 0.0 | 0.0 | 25.0 | 25.0 | 100.0 |"
    assert table[4] == "| Sum/Avg | 3 | 7 | 85.7 | 0.0 | 14.3 | 14.3 | 28.6 | 66.7 |"
    assert scored["word"].wer == pytest.approx(200 / 7)
    per_utt = (tmp_path / "per_utt.txt").read_text()
    assert per_utt.startswith("id: (s1-b) spk: s1") or per_utt.startswith("id: (s2-a) spk: s2")
    assert "REF:  d e f g *\n" in per_utt and "HYP:  d e f g H" in per_utt
    assert sclite_table(scored["word"]).splitlines()[-1].startswith("| Sum/Avg | 3 | 7 |")


# ---------------------------------------------------------------- the score stage on real (tiny) runs

TINY = {"enc_hidden": 16, "enc_proj": 16, "dec_hidden": 16, "dec_embed": 16, "dec_heads": 2, "conv_channels": 4,
        "enc_layers": 2, "aux_layer": 1, "vocab_size": 30}


@pytest.fixture(scope="module")
def tiny_runs(an4_slice, tmp_path_factory):
    """Three runs of the real trainer on the AN4 slice (1 epoch of 3 steps: plumbing, not accuracy)."""
    from weakalign.e2e.train import train_run
    from weakalign.pipeline.workspace import Workspace

    ws = Workspace("an4", data_root=an4_slice.data_root, exp_root=tmp_path_factory.mktemp("exp_score"))
    for run, seed in (("tiny", None), ("tiny_seed2", 2), ("tiny_seed3", 3)):
        train_run(ws, "baseline", seed=seed, epochs=1, overrides=TINY, run=run, max_steps_per_epoch=3, device="cpu")
    return ws


def test_score_stage_decodes_every_split_but_train_and_resumes(tiny_runs):
    from lhotse import CutSet

    from weakalign.e2e.score import score_run
    from weakalign.pipeline.io import read_json

    ws = tiny_runs
    run_dir = ws.exp / "e2e" / "tiny"
    summary = score_run(ws, run_dir, mode="beam", device="cpu", options={"beam": 3, "maxlenratio": 0.3})
    results = read_json(run_dir / "results.json")
    # The trainer's record rides along under "training"; every other key is a scored split.
    assert results["training"] == read_json(run_dir / "training.json")
    results = split_results(results)
    assert sorted(results) == ["dev", "test"] == sorted(summary["results"])
    for split in ("dev", "test"):
        r = results[split]
        cuts = CutSet.from_file(ws.fbank_cuts(split))
        refs = {c.id: c.supervisions[0].text for c in cuts}
        assert r["sentences"] == len(refs) == 12
        assert r["words"] == sum(len(t.split()) for t in refs.values())
        hyps = read_trn(run_dir / r["hyp_trn"])
        assert sorted(hyps) == sorted(refs)
        assert r["wer"] == pytest.approx(score_set(refs, hyps).wer, abs=0.01)
        assert r["ci95"][0] <= r["wer"] <= r["ci95"][1]
        assert r["sub"] + r["del"] + r["corr"] == r["words"]
        assert r["decode"]["beam"] == 3 and r["decode"]["mode"] == "beam"
    md = (run_dir / "RESULTS.md").read_text()
    assert "| SPKR | # Snt | # Wrd | Corr | Sub | Del | Ins | Err | S.Err |" in md and "git_hash" in md
    hyp = run_dir / "decode_beam" / "test" / "hyp.trn"
    stamp = hyp.stat().st_mtime_ns
    score_run(ws, run_dir, mode="beam", device="cpu", options={"beam": 3, "maxlenratio": 0.3})
    assert hyp.stat().st_mtime_ns == stamp, "a complete split was decoded again"
    hyp.write_text(hyp.read_text().splitlines(keepends=True)[0])  # as if a split were incomplete
    score_run(ws, run_dir, mode="beam", device="cpu", options={"beam": 3, "maxlenratio": 0.3})
    assert len(read_trn(hyp)) == 12


def test_a_split_is_decoded_again_when_the_model_or_the_options_change(tiny_runs, tmp_path):
    import shutil

    import torch

    from weakalign.e2e.score import score_run
    from weakalign.pipeline.io import read_json

    ws, run_dir = tiny_runs, tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="model_avg.pt not found: train the run first"):
        score_run(ws, run_dir, mode="beam", device="cpu")
    run_dir.mkdir()
    for file in ("model_avg.pt", "bpe.model", "training.json"):
        shutil.copy(ws.exp / "e2e" / "tiny" / file, run_dir / file)
    split_dir = run_dir / "decode_beam" / "dev"

    def decode(beam):
        score_run(ws, run_dir, mode="beam", device="cpu", options={"beam": beam, "maxlenratio": 0.3})
        return (split_dir / "hyp.trn").stat().st_mtime_ns, read_json(split_dir / "decode.json")

    first, info = decode(3)
    assert decode(3)[0] == first, "the same model and options decoded again"
    second, info = decode(2)
    assert second != first and info["options"]["beam"] == 2
    model = torch.load(run_dir / "model_avg.pt", weights_only=False)
    name = next(iter(model["state_dict"]))
    model["state_dict"][name] = model["state_dict"][name] + 0.01
    torch.save(model, run_dir / "model_avg.pt")
    third, changed = decode(2)
    assert third != second and changed["model_sha1"] != info["model_sha1"]


#: What scoring writes per split that must not depend on how many jobs decoded it (decode.json has timings).
SCORED_FILES = ("hyp.trn", "ref.trn", "utt2spk", "result.wer.md", "result.cer.md", "per_utt.txt")


def test_decoding_in_jobs_gives_the_bytes_of_one_process(tiny_runs, external_scheduler, tmp_path):
    """dev and test decoded (greedy, then beam) in 3 jobs on the embedded local cluster and in 2 jobs
    on an external scheduler write the same hypotheses, tables and per-utterance files, byte for
    byte, as nj=1 decoding in this process; the WERs in results.json are the same too."""
    import shutil

    from weakalign.e2e.score import score_run
    from weakalign.pipeline.io import read_json

    ws = tiny_runs
    # Small batches: each split has more batches than jobs, so every job gets a share.
    opts = {"beam": 3, "maxlenratio": 0.3, "max_frames": 1500}
    where = {"nj1": {"nj": 1}, "local3": {"nj": 3}, "external2": {"nj": 2, "cluster": external_scheduler}}
    runs = {}
    for name in where:  # copies of one trained run: each decodes from scratch
        runs[name] = tmp_path / name
        runs[name].mkdir()
        for file in ("model_avg.pt", "bpe.model", "training.json"):
            shutil.copy(ws.exp / "e2e" / "tiny" / file, runs[name] / file)
    for mode in ("greedy", "beam"):
        outputs = {}
        for name, run_dir in runs.items():
            summary = score_run(ws, run_dir, mode=mode, device="cpu", options=opts, **where[name])
            outputs[name] = {f"{split}/{file}": (run_dir / f"decode_{mode}" / split / file).read_bytes()
                             for split in ("dev", "test") for file in SCORED_FILES}
            outputs[name]["wer"] = {split: r["wer"] for split, r in summary["results"].items()}
            jobs = read_json(run_dir / f"decode_{mode}" / "test" / "decode.json")["jobs"]
            assert jobs == where[name]["nj"], (name, mode)
        for name in ("local3", "external2"):
            assert outputs[name] == outputs["nj1"], (name, mode)
        hyps = read_trn(runs["nj1"] / f"decode_{mode}" / "test" / "hyp.trn")
        assert len(hyps) == 12 and len(set(hyps.values())) > 1, f"degenerate test: {hyps}"


def test_compare_groups_seeds_and_writes_results_section(tiny_runs, tmp_path):
    from weakalign.e2e.compare import (compare, format_table, resolve_systems, results_section,
                                       update_results_md)
    from weakalign.e2e.score import score_run

    ws = tiny_runs
    for run in ("tiny", "tiny_seed2", "tiny_seed3"):
        score_run(ws, ws.exp / "e2e" / run, mode="greedy", device="cpu")
    e2e = ws.exp / "e2e"
    systems = resolve_systems(e2e, ["tiny", "tiny_seed*"])
    assert [len(s.run_dirs) for s in systems] == [1, 2]
    assert [len(s.run_dirs) for s in resolve_systems(e2e, ["tiny_seed2", "tiny_seed3"], group_seeds=True)] == [2]
    # Runs of the real trainer on the same cuts with the same stopping rule: comparable.
    rows = compare(systems, "test", replicas=500)
    assert rows[0]["p_value"] is None and 0.0 < rows[1]["p_value"] <= 1.0 and 0.0 < rows[1]["p_perm"] <= 1.0
    assert rows[1]["wer_std"] is not None and [r["n"] for r in rows] == [1, 2]
    table = format_table(rows)
    assert table.splitlines()[0].startswith("| system | n | test WER (%) | 95% CI | rel. vs tiny | p vs tiny | "
                                            "p_perm vs tiny |")
    with pytest.raises(FileNotFoundError, match="no run matches"):
        resolve_systems(e2e, ["nonexistent"])
    out = tmp_path / "RESULTS.md"
    for _ in range(2):  # rewriting replaces the corpus' section instead of appending another
        update_results_md(out, "an4", results_section("an4", systems))
    text = out.read_text()
    assert text.count("## an4") == 1 and "| tiny_seed* | 2 |" in text
    assert "weakalign train an4 --config baseline --seed 2 --set " in text and "--run tiny_seed2" in text
