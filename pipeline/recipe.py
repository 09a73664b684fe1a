"""The stages of ``weakalign align`` (Kaldi's stage / stop_stage) and what each one reads.

Each entry of :data:`ALIGN_STAGES` names a click command of :mod:`weakalign.pipeline.cli`;
``align`` invokes them in this order, and an opt-in stage of :data:`OPT_IN_STAGES` (``tri2``,
``tri3``) at its place when ``--from``/``--stop-after`` names it (``--stop-after tri3`` runs tri2 too). :data:`DEPENDS_ON` is the real dependency graph:
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

#: Stages that ``align`` runs only when asked (``--from``/``--stop-after`` names them), in the
#: order at the place given here (after that stage): nothing downstream reads them yet.
OPT_IN_STAGES: dict[str, str] = {"tri2": "tri1", "tri3": "tri2"}

#: Stages that ``align`` does not run by default: the opt-in ones, and extra outputs for other tools
#: (``export-kaldi``); made stale like the others.
EXTRA_STAGES: list[str] = [*OPT_IN_STAGES, "export-kaldi"]

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
    # opt-in: tri1's alignments (LDA classes, tree context, converted alignments), the MFCC, lang
    "tri2": ("tri1", "features", "lang"),
    # opt-in: tri2's alignments, model (first fMLLR, tree context) and final.mat, the MFCC, lang
    "tri3": ("tri2", "features", "lang"),
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
    "tri2": ("exp/tri2", "exp/tri2_ali"),
    "tri3": ("exp/tri3", "exp/tri3_ali"),
    "export-kaldi": ("data/kaldi",),
}

#: The stages that write under ``data/<c>`` (the others write only under ``exp/<c>``): what
#: :func:`weakalign.pipeline.stage.check_outputs_writable` checks before they start.
WRITES_DATA: frozenset[str] = frozenset({"prepare", "features", "lang", "export"})


def stage_order(opt_in=tuple(OPT_IN_STAGES)) -> list[str]:
    """:data:`ALIGN_STAGES` with the opt-in stages of ``opt_in`` at their places.

    >>> stage_order()
    ['prepare', 'features', 'lang', 'mono', 'tri1', 'tri2', 'tri3', 'hybrid', 'export']
    >>> stage_order(()) == ALIGN_STAGES
    True
    """
    order = []

    def place(stage):
        order.append(stage)
        for extra, after in OPT_IN_STAGES.items():
            if after == stage and extra in opt_in:
                place(extra)

    for stage in ALIGN_STAGES:
        place(stage)
    return order


def _with_opt_in_ancestors(stages) -> tuple[str, ...]:
    """The opt-in stages among ``stages`` and those they come after (tri3 -> tri3, tri2)."""
    out = []
    for stage in stages:
        while stage in OPT_IN_STAGES:
            out.append(stage)
            stage = OPT_IN_STAGES[stage]
    return tuple(out)


def select_stages(start: str | None, stop_after: str | None, needed=()) -> list[str]:
    """Stages from ``start`` to ``stop_after`` inclusive; an opt-in stage (:data:`OPT_IN_STAGES`) is
    among them only when it is ``start`` or ``stop_after``, or among ``needed`` (the GMM system the
    hybrid trains on, :func:`source_stage_of`) with the hybrid in the range.

    >>> select_stages("features", "features")
    ['features']
    >>> select_stages("mono", "tri2"), select_stages("tri1", "hybrid")
    (['mono', 'tri1', 'tri2'], ['tri1', 'hybrid'])
    >>> select_stages("tri1", "tri3"), select_stages("tri3", None)
    (['tri1', 'tri2', 'tri3'], ['tri3', 'hybrid', 'export'])
    >>> select_stages(None, None, needed=["tri3"])[3:], select_stages("hybrid", None, needed=["tri3"])
    (['mono', 'tri1', 'tri2', 'tri3', 'hybrid', 'export'], ['hybrid', 'export'])
    >>> select_stages(None, "tri1", needed=["tri3"])[-1]
    'tri1'
    """
    known = stage_order()
    for name in (start, stop_after):
        if name is not None and name not in known:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(known)} "
                             f"({', '.join(OPT_IN_STAGES)} only when named)")
    named = [s for s in (start, stop_after) if s]
    named_only = stage_order(_with_opt_in_ancestors(named))
    i = named_only.index(start) if start else 0
    j = named_only.index(stop_after) + 1 if stop_after else len(named_only)
    if i >= j:
        raise ValueError(f"FROM={start} comes after STOP_AFTER={stop_after}")
    if "hybrid" not in named_only[i:j]:
        return named_only[i:j]
    order = stage_order(_with_opt_in_ancestors([*named, *needed]))
    return order[order.index(named_only[i]):order.index(named_only[j - 1]) + 1]


#: The GMM alignment dirs the hybrid can train on (``--source-ali``).
SOURCE_ALI_DIRS = ("tri1_ali", "tri2_ali", "tri3_ali")
#: ``--source-ali`` per corpus when not given, chosen by the hybrid's dev WER (issue #16; RESULTS.md,
#: one seed each): speechocean762's hybrid on tri3_ali 50.21 vs 51.37 on tri1_ali; AN4's on tri3_ali
#: was worse on dev, so AN4, like any corpus not named here, trains on tri1_ali. ``align`` runs the GMM
#: stages a default needs (tri2 and tri3 before speechocean762's hybrid).
DEFAULT_SOURCE_ALI: dict[str, str] = {"speechocean762": "tri3_ali"}


def default_source_ali(corpus: str) -> str:
    """The alignments the hybrid trains on when ``--source-ali`` is not given.

    >>> default_source_ali("an4"), default_source_ali("speechocean762"), default_source_ali("a-new-corpus")
    ('tri1_ali', 'tri3_ali', 'tri1_ali')
    """
    return DEFAULT_SOURCE_ALI.get(corpus, "tri1_ali")


def source_stage_of(source_ali: str) -> str:
    """The GMM stage that writes a hybrid source alignment dir.

    >>> source_stage_of("tri3_ali")
    'tri3'
    """
    return source_ali.removesuffix("_ali")


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
    order (then the opt-in ``tri2``, ``tri3`` and ``export-kaldi``, which ``align`` does not run by default);
    [] for a stage that is not in :data:`DEPENDS_ON` (E2E runs record their own inputs).

    >>> dependents("features")
    ['mono', 'tri1', 'hybrid', 'export', 'tri2', 'tri3', 'export-kaldi']
    >>> dependents("lang")
    ['mono', 'tri1', 'hybrid', 'export', 'tri2', 'tri3']
    >>> dependents("prepare")
    ['features', 'lang', 'mono', 'tri1', 'hybrid', 'export', 'tri2', 'tri3', 'export-kaldi']
    """
    stale = {name}
    for stage, reads in DEPENDS_ON.items():  # the order is topological: a stage comes after all it reads
        if stale & set(reads):
            stale.add(stage)
    return [stage for stage in DEPENDS_ON if stage in stale and stage != name]
