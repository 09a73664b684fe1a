"""Fixtures of the hybrid's tests."""

import pytest

from weakalign.kaldi_steps.hybrid.realign import tid2pdf_array
from weakalign.kaldi_steps.hybrid.stage import load_fbank, pdf_targets
from weakalign.kaldi_steps.kaldi_io import read_ali_dir, read_model
from weakalign.pipeline.report import SkipReport


@pytest.fixture(scope="session")
def slice_targets(an4_slice_tri1):
    """``(utt -> (fbank, pdf-ids), num_pdfs)`` of the slice's train utterances, from its tri1 alignments."""
    ws = an4_slice_tri1
    trans_model, _ = read_model(ws.exp / "tri1_ali" / "final.mdl")
    feats = load_fbank(ws, "train")
    targets = pdf_targets(feats, read_ali_dir(ws.exp / "tri1_ali"), tid2pdf_array(trans_model),
                          SkipReport("test"), 2)
    return targets, int(trans_model.num_pdfs)
