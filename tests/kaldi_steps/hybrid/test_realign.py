"""Posterior -> transition-id matrix and DecodableCtc realignment (weakalign.kaldi_steps.hybrid.realign)."""

import kaldi_hmm_gmm as khg
import numpy as np
import pytest
from lhotse import CutSet

from weakalign.kaldi_steps.shard import TrainingGraphs
from weakalign.kaldi_steps.hybrid.realign import (align_utterances, pseudo_log_likelihoods,
                                                tid2pdf_array, transition_id_matrix)
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model, read_tree
from weakalign.kaldi_steps.lang import Lang


def _check_columns(trans_model):
    """Every transition-id's column holds its pdf's score, per the transition model itself."""
    num_pdfs, num_tids = trans_model.num_pdfs, trans_model.num_transition_ids
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, num_pdfs)).astype(np.float32)
    matrix = transition_id_matrix(scores, tid2pdf_array(trans_model))
    assert matrix.shape == (7, num_tids)
    decodable = khg.DecodableCtc(matrix)
    for tid in range(1, num_tids + 1):
        pdf = trans_model.transition_id_to_pdf(tid)
        assert np.array_equal(matrix[:, tid - 1], scores[:, pdf]), f"transition-id {tid}"
        # and DecodableCtc really reads column tid - 1 for transition-id tid
        assert decodable.log_likelihood(3, tid) == pytest.approx(float(scores[3, pdf]))
    return num_tids


@pytest.mark.parametrize("model", ["mono_model", "acoustic_g2p_output_model"])
def test_matrix_columns_on_real_kaldi_models(kaldi_models_dir, model):
    trans_model, _ = read_model(kaldi_models_dir / model / "final.mdl")
    assert _check_columns(trans_model) > 100


def test_matrix_columns_on_our_tri1(an4_slice_tri1):
    trans_model, _ = read_model(an4_slice_tri1.exp / "tri1_ali" / "final.mdl")
    _check_columns(trans_model)


def test_pseudo_log_likelihoods_divide_by_priors():
    log_post = np.log(np.array([[0.5, 0.25, 0.25]]))
    log_prior = np.log(np.array([0.5, 0.25, 0.25]))
    # posterior == prior: the likelihood ratio is 1 for every pdf
    assert np.allclose(pseudo_log_likelihoods(log_post, log_prior, 0.1), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="outputs"):
        pseudo_log_likelihoods(log_post, log_prior[:2])


def _oracle_realignment(ws, **where):
    """10 train utterances realigned from pseudo-likelihoods peaked on tri1's own pdfs, in one
    process and as ``align_utterances(**where)`` says: ``(utterances, tid2pdf, tri1, {where: results})``."""
    trans_model, _ = read_model(ws.exp / "tri1_ali" / "final.mdl")
    ctx_dep = read_tree(ws.exp / "tri1_ali" / "tree")
    lang = Lang.load(ws.lang)
    tid2pdf = tid2pdf_array(trans_model)
    tri1 = read_ali_dir(ws.exp / "tri1_ali")
    cuts = [c for c in CutSet.from_file(ws.fbank_cuts("train")) if c.id in tri1][:10]
    assert len(cuts) == 10

    def oracle(utt):
        pdfs = tid2pdf[tri1[utt]]
        scores = np.full((len(pdfs), trans_model.num_pdfs), -3.0, dtype=np.float32)
        scores[np.arange(len(pdfs)), pdfs] = 0.0
        return scores

    tasks = [(c.id, lang.words_to_ids(c.supervisions[0].text.split()), lambda u=c.id: oracle(u)) for c in cuts]
    graphs = TrainingGraphs(lang, trans_model, ctx_dep)
    results = {key: list(align_utterances(tasks, compile_graph=graphs, trans_model=trans_model, block=4, **kw))
               for key, kw in (("one", {"nj": 1}), ("jobs", where))}
    return cuts, tid2pdf, tri1, results


def test_oracle_scores_reproduce_tri1_alignments(an4_slice_tri1):
    """Pseudo-likelihoods peaked on tri1's own pdfs realign to tri1's pdf sequence: the graph,
    transition probabilities and DecodableCtc plumbing are right; 2 workers give the same result."""
    _assert_oracle_realignment(*_oracle_realignment(an4_slice_tri1, nj=2))


def test_the_realignment_on_an_external_scheduler_is_the_same(an4_slice_tri1, external_scheduler, caplog):
    """``--cluster``: the jobs run on a running scheduler's workers, with the same alignments."""
    import logging

    caplog.set_level(logging.INFO, logger="weakalign")
    _assert_oracle_realignment(*_oracle_realignment(an4_slice_tri1, nj=2, cluster=external_scheduler,
                                                    shared=(an4_slice_tri1.exp,)))
    assert "on the Dask cluster at " + external_scheduler in caplog.text


def _assert_oracle_realignment(cuts, tid2pdf, tri1, results):
    assert [r.utt_id for r in results["jobs"]] == [c.id for c in cuts]
    for r1, r2 in zip(results["one"], results["jobs"]):
        assert r1.alignment is not None, r1.error
        assert np.array_equal(r1.alignment, r2.alignment)
        assert np.array_equal(tid2pdf[r1.alignment], tid2pdf[tri1[r1.utt_id]]), r1.utt_id
