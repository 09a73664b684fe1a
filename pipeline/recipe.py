"""The stages of ``weakalign align`` (Kaldi's stage / stop_stage) and what each one reads.

Each entry of :data:`ALIGN_STAGES` names a click command of :mod:`weakalign.pipeline.cli`;
``align`` invokes them in this order. :data:`DEPENDS_ON` is the real dependency graph:
when a stage is redone, exactly the stages that read its outputs, directly or through
another stage, become stale (:func:`dependents`) -- not every later stage of the order.
The features, for instance, do not make ``lang`` stale.
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

#: Stages that ``align`` does not run: extra outputs for other tools, made stale like the others.
EXTRA_STAGES: list[str] = ["export-kaldi"]

#: The stages whose outputs each stage reads (its direct inputs besides the corpus source).
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "prepare": (),
    # the prepared recordings' audio
    "features": ("prepare",),
    # the transcripts (OOV counts, the LM of corpora without one) and prepare's source (default lexicon)
    "lang": ("prepare",),
    # MFCC + CMVN, and L / topology / phone sets
    "mono": ("features", "lang"),
    # mono's alignments to build the tree, plus the same MFCC and lang
    "tri1": ("mono", "features", "lang"),
    # tri1's senone alignments and tree (tri1_ali), fbank, and lang for the decoding graph
    "hybrid": ("tri1", "features", "lang"),
    # the alignment source (hybrid_ali, else tri1_ali), the fbank cuts, lang's phones.txt
    "export": ("hybrid", "tri1", "features", "lang"),
    # outside ``align``: the MFCC cuts (utterances, durations, frames) and the features' options
    "export-kaldi": ("prepare", "features"),
}

#: Where each stage writes (docs/LAYOUT.md): the first component of a path under ``data/<c>/`` or
#: ``exp/<c>/``, as a glob. A stage that finds one of these missing names the stage to run first.
WRITES: dict[str, tuple[str, ...]] = {
    "prepare": ("data/manifests",),
    "features": ("data/mfcc", "data/fbank"),
    "lang": ("data/lang",),
    "mono": ("exp/mono",),
    "tri1": ("exp/tri1", "exp/tri1_ali"),
    "hybrid": ("exp/hybrid", "exp/hybrid_ali", "exp/hybrid_pass*", "exp/hybrid_ali_pass*"),
    "export": ("data/ali", "data/cuts_*_ali.jsonl.gz"),
    "export-kaldi": ("data/kaldi",),
}

#: The stages that write under ``data/<c>`` (the others write only under ``exp/<c>``): what
#: :func:`weakalign.pipeline.stage.check_outputs_writable` checks before they start.
WRITES_DATA: frozenset[str] = frozenset({"prepare", "features", "lang", "export"})


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


def prerequisites(name: str) -> list[str]:
    """The stages whose outputs ``name`` reads, directly or through another stage, in recipe order.

    >>> prerequisites("tri1")
    ['prepare', 'features', 'lang', 'mono']
    """
    needed, todo = set(), [name]
    while todo:
        for stage in DEPENDS_ON.get(todo.pop(), ()):
            if stage not in needed:
                needed.add(stage)
                todo.append(stage)
    return [stage for stage in DEPENDS_ON if stage in needed]


def dependents(name: str) -> list[str]:
    """The stages that read ``name``'s outputs, directly or through another stage, in recipe
    order (then ``export-kaldi``, which ``align`` does not run); [] for a stage that is not in
    :data:`DEPENDS_ON` (E2E runs record their own inputs).

    >>> dependents("features")
    ['mono', 'tri1', 'hybrid', 'export', 'export-kaldi']
    >>> dependents("lang")
    ['mono', 'tri1', 'hybrid', 'export']
    >>> dependents("prepare")
    ['features', 'lang', 'mono', 'tri1', 'hybrid', 'export', 'export-kaldi']
    """
    stale = {name}
    for stage, reads in DEPENDS_ON.items():  # the order is topological: a stage comes after all it reads
        if stale & set(reads):
            stale.add(stage)
    return [stage for stage in DEPENDS_ON if stage in stale and stage != name]
