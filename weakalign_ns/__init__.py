"""weakalign: triphone alignments from a Kaldi-style hybrid system as weak supervision for E2E ASR.

The four stage packages live at the repository root (``pipeline/``, ``kaldi_steps/``,
``align/``, ``e2e/``) and are installed as ``weakalign.pipeline`` etc.
"""

__version__ = "0.1.0"
