"""Shared pytest set-up.

kaldi_hmm_gmm is imported first: importing kaldifst before it deadlocks.
"""

import kaldi_hmm_gmm  # noqa: F401  -- keep first

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WEAKALIGN_SHARED", REPO.parent / "shared"))
CORPORA = SHARED / "corpora"
KALDI_MODELS = SHARED / "fixtures" / "kaldi_models"
KALDI_AN4 = SHARED / "fixtures" / "kaldi_an4_reference"

# Tests run single-threaded torch so parallel workers and BLAS don't fight over 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    assert CORPORA.is_dir(), f"shared corpora not found at {CORPORA} (set WEAKALIGN_SHARED)"
    return CORPORA


@pytest.fixture(scope="session")
def kaldi_models_dir() -> Path:
    assert KALDI_MODELS.is_dir(), f"Kaldi model fixtures not found at {KALDI_MODELS}"
    return KALDI_MODELS


@pytest.fixture(scope="session")
def kaldi_an4_dir() -> Path:
    """Real Kaldi's mono/tri1 run on AN4 (lang, alignments, CTMs, per-frame phones; see its README.md)."""
    assert KALDI_AN4.is_dir(), f"Kaldi AN4 reference fixture not found at {KALDI_AN4}"
    return KALDI_AN4

# Fixtures that run real stages live in plugin modules, one per package that owns them.
pytest_plugins = [
    "tests.fixtures_pipeline",
    "tests.fixtures_lang",
    "tests.fixtures_gmm",
    "tests.fixtures_align",
    "tests.fixtures_dask",
]
