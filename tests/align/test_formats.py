"""CTM and Praat TextGrid writers: well-formed files that parse back to what was written."""

import pytest
from lhotse.supervision import AlignmentItem

from weakalign.align.formats import format_textgrid, read_ctm, read_textgrid, write_ctm, write_textgrid

WORDS = [AlignmentItem("YES", 0.31, 0.42), AlignmentItem('SAY "NO"', 0.9, 0.35)]
PHONES = [AlignmentItem("SIL", 0.0, 0.31), AlignmentItem("Y", 0.31, 0.1), AlignmentItem("EH", 0.41, 0.2),
          AlignmentItem("S", 0.61, 0.12), AlignmentItem("SIL", 0.73, 0.17), AlignmentItem("N", 0.9, 0.2),
          AlignmentItem("OW", 1.1, 0.15)]


def test_ctm_lines_and_round_trip(tmp_path):
    path = tmp_path / "a.ctm"
    write_ctm(path, [("utt1", WORDS[:1]), ("utt2", PHONES[:2])])
    assert path.read_text().splitlines() == ["utt1 1 0.31 0.42 YES", "utt2 1 0.00 0.31 SIL", "utt2 1 0.31 0.10 Y"]
    unsorted = tmp_path / "b.ctm"
    write_ctm(unsorted, [("utt2", PHONES[1::-1]), ("utt10", WORDS[:1]), ("utt1", [PHONES[5], WORDS[0]])])
    assert [line.split()[0] + " " + line.split()[2] for line in unsorted.read_text().splitlines()] == [
        "utt1 0.31", "utt1 0.90", "utt10 0.31", "utt2 0.00", "utt2 0.31"]  # by id (as sort does), then time
    back = read_ctm(path)
    assert list(back) == ["utt1", "utt2"]
    assert [(i.symbol, i.start, i.duration) for i in back["utt2"]] == [("SIL", 0.0, 0.31), ("Y", 0.31, 0.1)]


def test_read_ctm_rejects_malformed_lines(tmp_path):
    path = tmp_path / "bad.ctm"
    path.write_text("utt1 1 0.3 YES\n")
    with pytest.raises(ValueError, match="bad.ctm:1"):
        read_ctm(path)


def test_textgrid_tiers_cover_the_utterance_and_parse_back(tmp_path):
    path = tmp_path / "utt.TextGrid"
    write_textgrid(path, {"words": WORDS, "phones": PHONES}, xmax=1.4)
    text = path.read_text()
    assert text.startswith('File type = "ooTextFile"\nObject class = "TextGrid"')
    assert "size = 2" in text
    tiers = read_textgrid(path)
    assert list(tiers) == ["words", "phones"]
    # words: gap, YES, gap, SAY "NO" (quotes doubled and undoubled), trailing gap
    assert [t for _, _, t in tiers["words"]] == ["", "YES", "", 'SAY "NO"', ""]
    assert [t for _, _, t in tiers["phones"]] == [p.symbol for p in PHONES] + [""]
    for intervals in tiers.values():
        assert intervals[0][0] == 0 and intervals[-1][1] == pytest.approx(1.4)
        for (a, b, _), (c, _, _) in zip(intervals, intervals[1:]):
            assert a < b and b == pytest.approx(c)  # contiguous and increasing, as Praat requires
    assert tiers["words"][1][:2] == pytest.approx((0.31, 0.73))


def test_textgrid_clips_items_past_the_end_and_keeps_empty_tiers(tmp_path):
    text = format_textgrid({"words": [], "phones": [AlignmentItem("A", 0.0, 2.0)]}, xmax=1.0)
    path = tmp_path / "x.TextGrid"
    path.write_text(text)
    tiers = read_textgrid(path)
    assert tiers["words"] == [(0.0, 1.0, "")]
    assert tiers["phones"] == [(0.0, 1.0, "A")]


def test_read_textgrid_detects_a_wrong_interval_count(tmp_path):
    path = tmp_path / "x.TextGrid"
    write_textgrid(path, {"phones": PHONES}, xmax=1.4)
    path.write_text(path.read_text().replace("intervals: size = 8", "intervals: size = 9"))
    with pytest.raises(ValueError, match="declares 9 intervals"):
        read_textgrid(path)


def test_textgrid_keeps_long_times_exact(tmp_path):
    path = tmp_path / "long.TextGrid"
    write_textgrid(path, {"words": [AlignmentItem("X", 12345.67, 0.01)]}, xmax=12346.0)
    assert read_textgrid(path)["words"][1] == (12345.67, 12345.68, "X")


def test_short_textgrid_holds_the_long_ones_values_and_parses_the_same(tmp_path):
    tiers = {"words": WORDS, "phones": PHONES}
    long_text, short_text = (format_textgrid(tiers, xmax=1.4, format=f) for f in ("long", "short"))
    assert short_text.splitlines()[:8] == ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
                                           "0", "1.4", "<exists>", "2", '"IntervalTier"']
    assert "=" not in "".join(short_text.splitlines()[3:]).replace('"SAY ""NO"""', "")
    assert len(short_text.splitlines()) < len(long_text.splitlines())
    (tmp_path / "long.TextGrid").write_text(long_text)
    (tmp_path / "short.TextGrid").write_text(short_text)
    assert read_textgrid(tmp_path / "short.TextGrid") == read_textgrid(tmp_path / "long.TextGrid")
    assert [t for _, _, t in read_textgrid(tmp_path / "short.TextGrid")["words"]] == ["", "YES", "", 'SAY "NO"', ""]
    with pytest.raises(ValueError, match="format"):
        format_textgrid(tiers, xmax=1.4, format="json")


def test_read_textgrid_rejects_what_it_cannot_read(tmp_path):
    path = tmp_path / "x.TextGrid"
    path.write_text('File type = "ooTextFile"\nObject class = "Sound"\n\n0\n1\n')
    with pytest.raises(ValueError, match="not a TextGrid"):
        read_textgrid(path)
    write_textgrid(path, {"phones": PHONES}, xmax=1.4, format="short")
    path.write_text(path.read_text().replace('"IntervalTier"', '"TextTier"'))
    with pytest.raises(ValueError, match="not an IntervalTier"):
        read_textgrid(path)


def test_mfa_json_and_csv_hold_the_labelled_segments_of_every_tier(tmp_path):
    """MFA's ``--output_format json`` / ``csv`` layouts: quotes and commas survive, times are the
    segments' (no gap intervals), the CSV's speaker comes from the tier name or the argument."""
    import csv
    import json

    from weakalign.align.formats import write_alignment_file

    write_alignment_file(tmp_path / "r.json", {"words": WORDS, "phones": PHONES}, xmax=1.4, format="json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["start"], data["end"], list(data["tiers"])) == (0, 1.4, ["words", "phones"])
    assert data["tiers"]["words"] == {"type": "interval", "entries": [[0.31, 0.73, "YES"], [0.9, 1.25, 'SAY "NO"']]}
    assert len(data["tiers"]["phones"]["entries"]) == len(PHONES)
    write_alignment_file(tmp_path / "r.csv", {"words": WORDS[1:], "s2 - phones": PHONES[:1]}, xmax=1.4,
                         format="csv", speaker="s1")
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"Begin": "0.9", "End": "1.25", "Label": 'SAY "NO"', "Type": "words", "Speaker": "s1"},
                    {"Begin": "0.0", "End": "0.31", "Label": "SIL", "Type": "phones", "Speaker": "s2"}]
