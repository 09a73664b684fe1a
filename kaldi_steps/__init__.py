"""weakalign.kaldi_steps: lang, GMM-HMM training, trees, the hybrid BLSTM, Kaldi file formats."""

# kaldi_hmm_gmm must be imported before kaldifst: the other order deadlocks in a static initialiser.
import kaldi_hmm_gmm  # noqa: F401
