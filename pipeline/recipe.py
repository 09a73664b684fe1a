"""The ordered stages of ``weakalign align`` (Kaldi's stage / stop_stage).

Each entry names a click command of :mod:`weakalign.pipeline.cli`; ``align``
invokes them in order with the corpus and shared options.
"""

ALIGN_STAGES: list[str] = [
    "prepare",
    "features",
    "lang",
    "mono",
    "tri1",
    "hybrid",
    "export",
]


def select_stages(start: str | None, stop_after: str | None) -> list[str]:
    """Stages from ``start`` to ``stop_after`` inclusive.

    >>> select_stages("features", "features")
    ['features']
    """
    for name in (start, stop_after):
        if name is not None and name not in ALIGN_STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(ALIGN_STAGES)}")
    i = ALIGN_STAGES.index(start) if start else 0
    j = ALIGN_STAGES.index(stop_after) + 1 if stop_after else len(ALIGN_STAGES)
    if i >= j:
        raise ValueError(f"FROM={start} comes after STOP_AFTER={stop_after}")
    return ALIGN_STAGES[i:j]


def stages_after(name: str) -> list[str]:
    """The recipe stages that consume ``name``'s outputs (all later ones); [] for non-recipe stages.

    >>> stages_after("prepare")[0]
    'features'
    """
    if name not in ALIGN_STAGES:
        return []
    return ALIGN_STAGES[ALIGN_STAGES.index(name) + 1:]
