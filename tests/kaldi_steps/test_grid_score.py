"""Kaldi's ``score.sh`` grid scoring (``kaldi_steps/grid_score.py``) on real Kaldi's AN4 mono model
(``shared/fixtures/kaldi_an4_reference``): its HCLG built by the project from Kaldi's lang, a few
dev utterances with Kaldi's own features, checked against the project's plain decode and
against Kaldi's own best paths per LM weight."""

import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first

import numpy as np
import pytest

from weakalign.kaldi_steps.graph import _word_table, compute_wer, decode_set
from weakalign.kaldi_steps.grid_score import (Candidate, LoglikeDecoder, ScoringGrid, decode_candidates,
                                              decode_point, gmm_pdf_loglikes, penalised_graph, pick_point, rescore)

NUM_UTTS = 8
GRID = ScoringGrid(lm_weights=(8, 10, 13, 16), penalties=(0.0, 0.5, 1.0))


@pytest.fixture(scope="module")
def kaldi_mono(kaldi_an4_dir, tmp_path_factory):
    """Kaldi's mono model, the project's HCLG for it, and the first dev utterances' features
    (CMVN + deltas as Kaldi's decode.sh) and GMM log-likelihoods."""
    import kaldifst
    import kaldiio

    from weakalign.kaldi_steps.diag_gmm import GmmParams
    from weakalign.kaldi_steps.graph import make_graph
    from weakalign.kaldi_steps.kaldi_io import read_model
    from weakalign.pipeline.acoustic_features import add_deltas, apply_cmvn

    d = kaldi_an4_dir
    tm, am = read_model(d / "mono" / "final.mdl")
    hclg_path = make_graph(d / "lang", d / "mono", tmp_path_factory.mktemp("graph"), lm=d / "lang" / "lm.arpa")
    feats_dir = d / "feats" / "dev"
    utt2spk = dict(line.split() for line in (feats_dir / "utt2spk").read_text().splitlines())
    with kaldiio.ReadHelper(f"ark:{feats_dir / 'feats.ark'}") as reader:
        raw = dict(item for item, _ in zip(reader, range(NUM_UTTS)))
    with kaldiio.ReadHelper(f"ark:{feats_dir / 'cmvn.ark'}") as reader:
        cmvn = dict(reader)
    feats = {u: add_deltas(apply_cmvn(x, cmvn[utt2spk[u]])).astype(np.float32) for u, x in raw.items()}
    params = GmmParams.from_am(am)
    loglikes = {u: gmm_pdf_loglikes(params, x) for u, x in feats.items()}
    return dict(tm=tm, am=am, hclg=kaldifst.StdVectorFst.read(str(hclg_path)), hclg_path=hclg_path, feats=feats,
                loglikes=loglikes,
                words=_word_table(d / "lang" / "words.txt"), decode_dir=d / "decode" / "mono" / "dev")


@pytest.fixture(scope="module")
def rescored(kaldi_mono):
    candidates = decode_candidates(LoglikeDecoder(kaldi_mono["hclg"], kaldi_mono["tm"]),
                                   kaldi_mono["loglikes"].items(), GRID.lm_weights)
    return candidates, rescore(candidates, GRID)


def _kaldi_hyps(decode_dir, lm_weight, penalty):
    path = decode_dir / "scoring_kaldi" / f"penalty_{penalty:.1f}" / f"{lm_weight}.txt"
    return {line.split()[0]: line.split()[1:] for line in path.read_text().splitlines()}


@pytest.mark.timeout(120)
def test_lm_weight_10_without_penalty_is_the_plain_decode_at_acoustic_scale_0_1(kaldi_mono, rescored):
    """(w=10, p=0) is the project's plain decode (GMM decodable scaled by 0.1, lattice decoder)."""
    km = kaldi_mono
    plain = decode_set(km["hclg"], ((u, khg.DecodableAmDiagGmmScaled(km["am"], km["tm"], x, 0.1))
                                    for u, x in km["feats"].items()), km["words"], trans_model=km["tm"],
                       progress=False)
    _, hyps = rescored
    assert {u: [km["words"][w] for w in ws] for u, ws in hyps[(10, 0.0)].items()} == plain


@pytest.mark.timeout(120)
def test_rescored_best_paths_match_kaldis_lattice_rescoring(kaldi_mono, rescored):
    """Kaldi's own best paths (lattice-scale + lattice-add-penalty + lattice-best-path) on its own
    model: at most one of the slice's utterances differs at any grid point."""
    km = kaldi_mono
    _, hyps = rescored
    for (w, p), by_utt in hyps.items():
        kaldi = _kaldi_hyps(km["decode_dir"], w, p)
        differ = [u for u, ids in by_utt.items() if [km["words"][i] for i in ids] != kaldi[u]]
        assert len(differ) <= 1, ((w, p), differ)


@pytest.mark.timeout(120)
def test_a_larger_penalty_never_adds_words_and_the_exact_penalised_decode_is_no_worse(kaldi_mono, rescored):
    """Raising the insertion penalty can only shorten the chosen hypothesis (fewer insertions);
    the exact decode at (w, p) over HCLG with p per word arc finds a path at least as cheap as
    the n-best choice."""
    km = kaldi_mono
    candidates, hyps = rescored
    for w in GRID.lm_weights:
        lengths = [sum(len(h) for h in hyps[(w, p)].values()) for p in GRID.penalties]
        assert lengths == sorted(lengths, reverse=True), (w, lengths)
    refs = {line.split()[0]: line.split()[1:]
            for line in (km["decode_dir"] / "scoring_kaldi" / "test_filt.txt").read_text().splitlines()}
    ins = [compute_wer({u: refs[u] for u in hyps[(10, p)]},
                       {u: [km["words"][i] for i in ids] for u, ids in hyps[(10, p)].items()})["ins"]
           for p in GRID.penalties]
    assert ins == sorted(ins, reverse=True) and ins[-1] < ins[0], ins
    w, p = 13, 1.0
    exact = LoglikeDecoder(penalised_graph(km["hclg"], p), km["tm"])
    for u, ll in km["loglikes"].items():
        found = exact.best_path(u, ll, 1.0 / w)
        chosen = min(candidates[u], key=lambda c: c.cost(w, p))
        # found.graph already holds p per word: it is the graph cost of the penalised HCLG.
        assert found.graph + found.acoustic / w <= chosen.cost(w, p) + 1e-2, u


def test_the_point_is_picked_by_lowest_wer_then_smaller_weight_then_smaller_penalty():
    dev = {(9, 1.0): {"wer": 11.0}, (10, 0.0): {"wer": 10.0}, (10, 0.5): {"wer": 10.0}, (12, 0.0): {"wer": 10.0}}
    assert pick_point(dev) == (10, 0.0)
    c = [Candidate((1, 2, 3), graph=5.0, acoustic=100.0), Candidate((1, 2), graph=5.5, acoustic=103.0)]
    assert rescore({"u": c}, ScoringGrid((10,), (0.0, 1.0))) == {(10, 0.0): {"u": [1, 2, 3]}, (10, 1.0): {"u": [1, 2]}}
    with pytest.raises(ValueError, match="positive LM weights"):
        ScoringGrid((0, 10), (0.0,))


def test_every_other_lm_weight_is_decoded_by_default_and_only_the_grids_own():
    assert ScoringGrid().decode_lm_weights == (7, 9, 11, 13, 15, 17)
    assert GRID.decode_lm_weights == (8, 13, 16)
    assert ScoringGrid((9, 12), (0.0,), method="nbest").as_dict()["decode_lm_weights"] == [9, 12]
    with pytest.raises(ValueError, match="some of the grid's"):
        ScoringGrid((9, 10, 11), (0.0,), decode_lm_weights=(9, 12))


def test_the_checks_grid_says_how_its_paths_are_found_and_old_names_get_a_clear_error():
    from weakalign.kaldi_steps.commands import DECODE_SCORING
    from weakalign.kaldi_steps.grid_score import SCORINGS, scoring_grid

    assert list(DECODE_SCORING["type"].choices) == list(SCORINGS) and DECODE_SCORING["default"] == SCORINGS[0]
    assert ScoringGrid().method == "lattice" and scoring_grid("kaldi-lattice", GRID) == GRID
    nbest = scoring_grid("kaldi-nbest", GRID)
    assert nbest.method == "nbest" and nbest.points == GRID.points and nbest.decode_lm_weights == (8, 13, 16)
    assert nbest.as_dict() == {"method": "nbest", "lm_weights": [8, 10, 13, 16], "penalties": [0.0, 0.5, 1.0],
                               "decode_lm_weights": [8, 13, 16]}
    assert scoring_grid("scales", GRID) is None
    with pytest.raises(ValueError, match="'kaldi-grid' was the n-best check, now 'kaldi-nbest'"):
        scoring_grid("kaldi-grid")
    with pytest.raises(ValueError, match="unknown grid method"):
        ScoringGrid(method="confusion")


@pytest.mark.timeout(120)
def test_paths_of_every_other_lm_weight_rescored_at_all_of_them_match_kaldis_lattice(kaldi_mono, rescored):
    """The default check decodes only GRID.decode_lm_weights (8, 13, 16) and rescores those paths
    at 10 as well: at most one utterance differs from Kaldi's own best path at any point, and at
    a decoded weight the hypotheses are those of decoding every weight."""
    km = kaldi_mono
    _, every_hyps = rescored
    hyps = rescore(decode_candidates(LoglikeDecoder(km["hclg"], km["tm"]), km["loglikes"].items(),
                                     GRID.decode_lm_weights), GRID)
    for (w, p), by_utt in hyps.items():
        kaldi = _kaldi_hyps(km["decode_dir"], w, p)
        differ = [u for u, ids in by_utt.items() if [km["words"][i] for i in ids] != kaldi[u]]
        assert len(differ) <= 1, ((w, p), differ)
        if w in GRID.decode_lm_weights and p == 0.0:
            assert by_utt == every_hyps[(w, p)]


def test_a_long_grid_decode_says_how_far_it_got(kaldi_mono, caplog):
    from weakalign.kaldi_steps.lattice import LatticeDecoder, lattice_candidates

    km = kaldi_mono
    first_two = list(km["loglikes"].items())[:2]
    with caplog.at_level("INFO", logger="weakalign"):
        decode_candidates(LoglikeDecoder(km["hclg"], km["tm"]), first_two, (10, 13), report_every_s=0.0)
        lattice_candidates(LatticeDecoder(km["hclg"], km["tm"]), first_two, GRID, report_every_s=0.0)
    said = [r.getMessage().split(" in ")[0] for r in caplog.records if "utterance(s) in" in r.getMessage()]
    assert said == ["grid decode at 2 LM weight(s): 1 utterance(s)", "grid decode at 2 LM weight(s): 2 utterance(s)",
                    "lattice decode: 1 utterance(s)", "lattice decode: 2 utterance(s)"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("nj", [1, 2])
def test_decoding_archives_in_jobs_finds_the_same_paths_as_one_decoder(kaldi_mono, rescored, tmp_path, nj):
    """Log-likelihoods written as one Kaldi archive per job, each decoded by its own job's decoder
    over the HCLG file (in Dask workers for nj 2): the same candidates per utterance, in the same
    order, by either grid method, and the same exact decode at a penalised point, as one decoder in
    this process."""
    from dataclasses import replace

    from weakalign.kaldi_steps.execution import Executor
    from weakalign.kaldi_steps.lattice import LatticeDecoder, lattice_candidates
    from weakalign.kaldi_steps.mapped_decode import decode_point_in_jobs, grid_candidates_in_jobs, write_loglike_arks

    km, (candidates, _) = kaldi_mono, rescored
    arks, order = write_loglike_arks(km["loglikes"], tmp_path, nj)
    assert len(arks) == nj and order == list(km["loglikes"])
    one = decode_point(LoglikeDecoder(penalised_graph(km["hclg"], 0.5), km["tm"]), km["loglikes"].items(), 13)
    from_lattices = lattice_candidates(LatticeDecoder(km["hclg"], km["tm"]), km["loglikes"].items(), GRID)
    every_weight = replace(GRID, method="nbest", decode_lm_weights=GRID.lm_weights)
    with Executor(nj) as executor:
        in_jobs = grid_candidates_in_jobs(arks, order, km["hclg_path"], km["tm"], every_weight, executor)
        lattices_in_jobs = grid_candidates_in_jobs(arks, order, km["hclg_path"], km["tm"], GRID, executor)
        at_point = decode_point_in_jobs(arks, order, km["hclg_path"], km["tm"], 13, 0.5, executor)
    assert list(in_jobs) == list(candidates) and in_jobs == candidates
    assert list(lattices_in_jobs) == list(from_lattices) and lattices_in_jobs == from_lattices
    assert list(at_point) == list(one) and at_point == one


@pytest.mark.timeout(120)
def test_one_decode_to_lattices_scores_the_grid_as_kaldi(kaldi_mono, rescored):
    """One lattice decode per utterance at 1/12 (kaldi-decoder's LatticeSimpleDecoder), its best
    paths at every grid point: at most one utterance per point differs from Kaldi's own lattice
    rescoring; at (12, 0.0), the lattice's acoustic scale, its best path is the plain decode's."""
    from weakalign.kaldi_steps.lattice import LatticeDecoder, lattice_candidates

    km = kaldi_mono
    candidates = lattice_candidates(LatticeDecoder(km["hclg"], km["tm"]), km["loglikes"].items(), GRID)
    assert list(candidates) == list(km["loglikes"]) and all(candidates.values())
    for (w, p), by_utt in rescore(candidates, GRID).items():
        kaldi = _kaldi_hyps(km["decode_dir"], w, p)
        differ = [u for u, ids in by_utt.items() if [km["words"][i] for i in ids] != kaldi[u]]
        assert len(differ) <= 1, ((w, p), differ)
    at_12 = rescore(candidates, ScoringGrid((12,), (0.0,)))[(12, 0.0)]
    assert at_12 == decode_point(LoglikeDecoder(km["hclg"], km["tm"]), km["loglikes"].items(), 12)
