"""The hybrid acoustic model: a BLSTM trained on GMM senones, and the realignment it makes.

One concept, several modules (import them directly; this package imports nothing heavy):

- :mod:`.stage`: the ``hybrid`` stage (targets, priors, training, realignment, WER check, passes);
- :mod:`.model`: the BLSTM and its chunked input windows;
- :mod:`.train`: frame-CE training with held-out speakers, early stopping and resume;
- :mod:`.priors`: pdf priors from the training alignments;
- :mod:`.realign`: Viterbi realignment over training graphs with scaled pseudo-likelihoods;
- :mod:`.benchmarks`: training and realignment throughput for ``make bench``.
"""
