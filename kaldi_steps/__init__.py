"""weakalign.kaldi_steps: lang, GMM-HMM training, trees, the hybrid BLSTM, Kaldi file formats."""

# kaldi_hmm_gmm must be imported before kaldifst: the other order deadlocks in a static initialiser.
import kaldi_hmm_gmm  # noqa: F401

# kaldi_decoder (the lattice decoder, .lattice) too: imported once FSTs have been built, it deadlocks
# in its own initialiser, so it is loaded here, before any kaldi_steps code runs.
import kaldi_decoder  # noqa: F401,E402
