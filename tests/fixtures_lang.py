"""Session fixtures that run real stages (see conftest.py)."""

import pytest

from weakalign.kaldi_steps.lang import Lang, lang_stage
from weakalign.pipeline.stage import run_stage


@pytest.fixture(scope="session")
def an4_lang(an4_slice) -> Lang:
    """The real ``lang`` stage run on the ``an4_slice`` workspace: a :class:`Lang` loaded from
    ``an4_slice.lang`` (``data/an4/lang``), built from the real AN4 ``etc/an4.dic`` +
    ``etc/an4.filler`` (position-dependent phones, ``SIL``/``SPN``, ``<UNK>``, ``L.fst``,
    ``L_disambig.fst``, ``topo``...). Read-only: shared by the session.
    """
    run_stage("lang", an4_slice, lang_stage)
    return Lang.load(an4_slice.lang)
