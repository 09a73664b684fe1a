"""GMM-HMM building blocks: statistics, re-estimation, mixing up, alignment (one job's share).

As Kaldi's ``gmm-init-mono``, ``gmm-acc-stats-ali``, ``gmm-est``, ``align-equal-compiled``
and ``gmm-align-compiled``, on ``kaldi_hmm_gmm`` (khg) and ``kaldifst``:

* statistics are accumulated in numpy, one matrix product per pdf over all its frames
  (:func:`accumulate_gmm_stats`); :func:`update_model` re-estimates the Gaussians with
  Kaldi's rules (khg's ``AccumAmDiagGmm.get_acc`` returns copies, so its accumulators
  cannot be filled from numpy), the transitions with khg's ``mle_update``, and mixes up
  as Kaldi's ``SplitByCount`` but seeded (khg's perturbs from ``std::random_device``);
* a :class:`Shard` holds one job's utterances: features (MFCC + per-speaker CMVN, then Δ+ΔΔ or
  spliced and transformed: :mod:`~weakalign.kaldi_steps.feature_transform`),
  training graphs compiled once without transition probabilities, and the current
  alignments; :func:`shard_args` deals a split's speakers to the jobs and
  :mod:`weakalign.kaldi_steps.execution` runs the shards (in Dask workers).

>>> import numpy as np
>>> am = init_mono_model(np.array([1.0, 2.0]), np.array([4.0, 9.0]), num_pdfs=3)
>>> am.num_pdfs, am.num_gauss
(3, 3)
>>> split_by_speaker({"a": ("s1", 3.0), "b": ("s2", 1.0), "c": ("s1", 1.0)}, 2)
[['a', 'c'], ['b']]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weakalign.pipeline.io import write_json

log = logging.getLogger("weakalign")

ACOUSTIC_SCALE = 0.1  # Kaldi's scale_opts: --acoustic-scale=0.1 --self-loop-scale=0.1
SELF_LOOP_SCALE = 0.1
TRANSITION_SCALE = 1.0


# ---------------------------------------------------------------------------------------------
# models


def single_gaussian_gmm(mean: np.ndarray, var: np.ndarray):
    """A one-component ``khg.DiagGmm`` with this mean and (diagonal) variance."""
    import kaldi_hmm_gmm as khg

    gmm = khg.DiagGmm(1, len(mean))
    gmm.set_weights(np.ones(1, dtype=np.float32))
    inv = (1.0 / np.asarray(var, dtype=np.float64))[None, :].astype(np.float32)
    gmm.set_invvars_and_means(inv, np.asarray(mean, dtype=np.float32)[None, :])
    gmm.compute_gconsts()
    return gmm


def init_mono_model(mean: np.ndarray, var: np.ndarray, num_pdfs: int):
    """As ``gmm-init-mono``: every pdf one Gaussian with the global mean and variance."""
    import kaldi_hmm_gmm as khg

    am = khg.AmDiagGmm()
    for _ in range(num_pdfs):
        am.add_pdf(single_gaussian_gmm(mean, var))
    return am


@dataclass
class GmmParams:
    """The AmDiagGmm as flat numpy arrays: Gaussians of pdf j are rows offsets[j]:offsets[j+1]."""

    offsets: np.ndarray
    gconsts: np.ndarray  # (G,)
    means_invvars: np.ndarray  # (G, D)
    inv_vars: np.ndarray  # (G, D)

    @classmethod
    def from_am(cls, am) -> "GmmParams":
        gc, mi, iv, sizes = [], [], [], []
        for j in range(am.num_pdfs):
            g = am.get_pdf(j)
            gc.append(np.asarray(g.gconsts, dtype=np.float64))
            mi.append(np.asarray(g.means_invvars, dtype=np.float64))
            iv.append(np.asarray(g.inv_vars, dtype=np.float64))
            sizes.append(len(gc[-1]))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return cls(offsets, np.concatenate(gc), np.concatenate(mi), np.concatenate(iv))


@dataclass
class GmmStats:
    """Zeroth, first and second order statistics per Gaussian (rows as in :class:`GmmParams`)."""

    occ: np.ndarray
    x: np.ndarray
    x2: np.ndarray
    loglike: float = 0.0
    frames: int = 0

    @classmethod
    def zeros(cls, num_gauss: int, dim: int) -> "GmmStats":
        return cls(np.zeros(num_gauss), np.zeros((num_gauss, dim)), np.zeros((num_gauss, dim)))

    def add(self, other: "GmmStats") -> None:
        self.occ += other.occ
        self.x += other.x
        self.x2 += other.x2
        self.loglike += other.loglike
        self.frames += other.frames

    def pdf_occs(self, offsets: np.ndarray) -> np.ndarray:
        return np.add.reduceat(self.occ, offsets[:-1]) if len(self.occ) else np.zeros(len(offsets) - 1)


def pdf_posteriors(params: GmmParams, feats: np.ndarray, pdfs: np.ndarray):
    """Per pdf of ``pdfs`` (T,), its frames' Gaussian posteriors within that pdf, one vectorised pass
    per pdf: yields (frame indices, first Gaussian row, end row, posteriors (n x M), frame log-likelihoods)."""
    order = np.argsort(pdfs, kind="stable")
    bounds = np.flatnonzero(np.diff(pdfs[order])) + 1
    for chunk in np.split(order, bounds):
        if len(chunk) == 0:
            continue
        j = int(pdfs[chunk[0]])
        lo, hi = params.offsets[j], params.offsets[j + 1]
        x = feats[chunk]
        ll = params.gconsts[lo:hi] + x @ params.means_invvars[lo:hi].T - 0.5 * ((x * x) @ params.inv_vars[lo:hi].T)
        top = ll.max(1, keepdims=True)
        post = np.exp(ll - top)
        tot = post.sum(1, keepdims=True)
        post /= tot
        yield chunk, lo, hi, post, (np.log(tot) + top)[:, 0]


def accumulate_gmm_stats(params: GmmParams, feats: np.ndarray, pdfs: np.ndarray,
                         stats_feats: np.ndarray | None = None) -> GmmStats:
    """As ``gmm-acc-stats-ali`` for frames ``feats`` (T x D) aligned to ``pdfs`` (T,).

    Gaussian posteriors within each frame's pdf; one vectorised pass per pdf. ``stats_feats``
    (T x D): accumulate these frames with the posteriors of ``feats`` instead
    (``gmm-acc-stats-twofeats``).
    """
    feats = np.asarray(feats, dtype=np.float64)
    stats_feats = feats if stats_feats is None else np.asarray(stats_feats, dtype=np.float64)
    stats = GmmStats.zeros(len(params.gconsts), stats_feats.shape[1])
    for chunk, lo, hi, post, frame_ll in pdf_posteriors(params, feats, pdfs):
        x = stats_feats[chunk]
        stats.loglike += float(frame_ll.sum())
        stats.occ[lo:hi] += post.sum(0)
        stats.x[lo:hi] += post.T @ x
        stats.x2[lo:hi] += post.T @ (x * x)
    stats.frames = len(pdfs)
    return stats


def mle_update_gmm(gmm, occ: np.ndarray, x: np.ndarray, x2: np.ndarray, *,
                   min_gaussian_occupancy: float = 10.0, min_gaussian_weight: float = 1e-5,
                   min_variance: float = 0.001):
    """Maximum-likelihood re-estimate of one ``DiagGmm`` from its statistics, as Kaldi's
    ``MleDiagGmmUpdate``: a Gaussian is re-estimated when its occupancy is *above*
    ``min_gaussian_occupancy`` and its weight above ``min_gaussian_weight`` (variances floored at
    ``min_variance``); the others are removed in index order, except that the last one left is kept
    with its old mean and variance (weight at least ``min_gaussian_weight``); weights renormalised.
    No statistics at all: the GMM is unchanged (one Gaussian) or reduced to its last Gaussian.

    Returns (new DiagGmm, number of Gaussians removed).
    """
    num = len(occ)
    total = float(occ.sum())
    prob = occ / total if total != 0.0 else np.full(num, 1.0 / num)
    old_iv = np.asarray(gmm.inv_vars, dtype=np.float64)
    means = np.asarray(gmm.means_invvars, dtype=np.float64) / old_iv
    variances = 1.0 / old_iv
    weights = np.asarray(gmm.weights, dtype=np.float64).copy()
    removed = []
    for g in range(num):
        if occ[g] > min_gaussian_occupancy and prob[g] > min_gaussian_weight:
            weights[g] = prob[g]
            means[g] = x[g] / occ[g]
            variances[g] = np.maximum(x2[g] / occ[g] - means[g] * means[g], min_variance)
        elif len(removed) < num - 1:
            removed.append(g)
        else:
            weights[g] = max(prob[g], min_gaussian_weight)
    if total == 0.0 and num == 1:
        return gmm, 0
    keep = np.setdiff1d(np.arange(num), removed)
    w = weights[keep]
    return gmm_from_arrays(w / w.sum() if removed else w, means[keep], variances[keep]), len(removed)


def gmm_from_arrays(weights: np.ndarray, means: np.ndarray, variances: np.ndarray):
    """A ``khg.DiagGmm`` from weights (G,), means (G, D), variances (G, D)."""
    import kaldi_hmm_gmm as khg

    gmm = khg.DiagGmm(len(weights), means.shape[1])
    gmm.set_weights(np.asarray(weights, dtype=np.float32))
    gmm.set_invvars_and_means((1.0 / variances).astype(np.float32), means.astype(np.float32))
    gmm.compute_gconsts()
    return gmm


def split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> np.ndarray:
    """Gaussians per pdf after mixing up, as Kaldi's ``GetSplitTargets``: starting from one
    per pdf, repeatedly give one more to the pdf with the largest occ^power per Gaussian,
    unless that would leave it less than ``min_count`` frames per Gaussian."""
    import heapq

    occs = np.asarray(occs, dtype=np.float64)
    num = np.ones(len(occs), dtype=np.int64)
    prio = np.power(np.maximum(occs, 0.0), power)
    heap = [(-prio[j], j) for j in range(len(occs))]
    heapq.heapify(heap)
    total = len(occs)
    while total < target and heap:
        _, j = heapq.heappop(heap)
        if prio[j] == 0 or (num[j] + 1) * min_count >= occs[j]:
            continue  # this pdf cannot take more Gaussians
        num[j] += 1
        total += 1
        heapq.heappush(heap, (-prio[j] / num[j], j))
    return num


def split_gmm(gmm, target: int, perturb: float, rng):
    """Kaldi's ``DiagGmm::Split``: until ``target``, halve the heaviest component (the first on ties)
    into two whose ``means_invvars`` move apart by ``± perturb * RandGauss() * sqrt(inv_var)`` (mean
    shifts of ``perturb`` standard deviations), in float32 as Kaldi's model holds them; ``rng`` a
    :class:`~.kaldi_random.GlibcRandom` (Kaldi's draws)."""
    weights = np.asarray(gmm.weights, dtype=np.float32).copy()
    if target <= len(weights):
        return gmm
    inv_vars = np.asarray(gmm.inv_vars, dtype=np.float32)
    means_invvars = np.asarray(gmm.means_invvars, dtype=np.float32)
    num, dim = len(weights), inv_vars.shape[1]
    weights = np.concatenate([weights, np.zeros(target - num, dtype=np.float32)])
    inv_vars = np.concatenate([inv_vars, np.zeros((target - num, dim), dtype=np.float32)])
    means_invvars = np.concatenate([means_invvars, np.zeros((target - num, dim), dtype=np.float32)])
    factor = np.float32(perturb)
    while num < target:
        k = int(np.argmax(weights[:num]))
        weights[k] /= np.float32(2.0)
        weights[num] = weights[k]
        draws = np.array([rng.rand_gauss() for _ in range(dim)], dtype=np.float32)
        shift = factor * (draws * np.sqrt(inv_vars[k], dtype=np.float32))
        inv_vars[num] = inv_vars[k]
        means_invvars[num] = means_invvars[k] + shift
        means_invvars[k] = means_invvars[k] - shift
        num += 1
    import kaldi_hmm_gmm as khg

    out = khg.DiagGmm(target, dim)
    out.set_weights(weights)
    out.set_invvars_and_means(inv_vars, means_invvars / inv_vars)  # khg sets means_invvars = means * inv_vars
    out.compute_gconsts()
    return out


def split_by_count(am, occs: np.ndarray, target: int, *, perturb: float = 0.01, power: float = 0.25,
                   min_count: float = 20.0):
    """Mixing-up as Kaldi's ``AmDiagGmm::SplitByCount`` (``gmm-est --mix-up``, ``gmm-mixup``), with
    Kaldi's own random draws (:class:`~.kaldi_random.GlibcRandom` from seed 1, as in a fresh Kaldi
    process): khg's own ``split_by_count`` perturbs with ``std::random_device``, so two runs differ."""
    import kaldi_hmm_gmm as khg

    from .kaldi_random import GlibcRandom

    rng = GlibcRandom(1)
    targets = split_targets(occs, target, power, min_count)
    out = khg.AmDiagGmm()
    for j in range(am.num_pdfs):
        out.add_pdf(split_gmm(am.get_pdf(j), int(targets[j]), perturb, rng))
    return out


def update_model(trans_model, am, stats: GmmStats, trans_counts: np.ndarray, *, mixup: int = 0,
                 power: float = 0.25, min_gaussian_occupancy: float = 10.0, perturb: float = 0.01,
                 min_count: float = 20.0):
    """As ``gmm-est``: ML update of transitions (khg ``mle_update``) and Gaussians, then mixing
    up towards ``mixup`` Gaussians (:func:`split_by_count`, Kaldi's allocation by occupancy^power).

    Returns (new AmDiagGmm, info). khg's ``AccumAmDiagGmm.get_acc`` returns copies, so its
    accumulators cannot be filled from numpy statistics; the Gaussian update is done here.
    """
    import kaldi_hmm_gmm as khg

    offsets = GmmParams.from_am(am).offsets
    t_impr, t_count = trans_model.mle_update(np.asarray(trans_counts, dtype=np.float64),
                                             khg.MleTransitionUpdateConfig())
    new_am = khg.AmDiagGmm()
    removed = 0
    for j in range(am.num_pdfs):
        lo, hi = offsets[j], offsets[j + 1]
        gmm, n_removed = mle_update_gmm(am.get_pdf(j), stats.occ[lo:hi], stats.x[lo:hi], stats.x2[lo:hi],
                                        min_gaussian_occupancy=min_gaussian_occupancy)
        removed += n_removed
        new_am.add_pdf(gmm)
    occs = stats.pdf_occs(offsets)
    if mixup > 0:
        # As gmm-est: whenever --mix-up is given, even when the model already has that many Gaussians
        # (the targets are dealt from one per pdf, so pdfs below their share still split).
        new_am = split_by_count(new_am, occs, int(mixup), perturb=perturb, power=power, min_count=min_count)
    return new_am, {"trans_objf_impr_per_frame": t_impr / max(t_count, 1.0), "gauss_removed": removed,
                    "num_gauss": new_am.num_gauss, "occs": occs}


def transition_counts(alignments, num_transition_ids: int) -> np.ndarray:
    """Occupation count of every transition-id (index 0 unused), as Kaldi's transition accumulator."""
    counts = np.zeros(num_transition_ids + 1)
    for ali in alignments:
        counts += np.bincount(ali, minlength=num_transition_ids + 1)
    return counts


# ---------------------------------------------------------------------------------------------
# one job's utterances


class TrainingGraphs:
    """``compile(word_ids)`` -> an utterance's training graph, as ``compile-train-graphs``.

    Compiled from ``L.fst``, as ``train_mono.sh``/``align_si.sh`` call ``compile-train-graphs``
    (not ``L_disambig.fst``: its extra disambiguation arcs change the graph's shape, and with it
    which paths the random equal alignment takes), with transition and self-loop scales 0 (the
    aligner adds the model's transition probabilities, 1.0 / 0.1, afterwards). Used by the GMM
    shards and by the hybrid realignment alike.
    """

    def __init__(self, lang, trans_model, ctx_dep):
        import kaldi_hmm_gmm as khg

        self.args = (lang, trans_model, ctx_dep)
        opts = khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0)
        self.compiler = khg.TrainingGraphCompiler(trans_model, ctx_dep, lang.lexicon_fst(),
                                                  list(lang.disambig_phone_ids), opts)

    def __reduce__(self):
        # The C++ compiler does not pickle: a Dask worker builds its own from what built this one.
        return TrainingGraphs, self.args

    def __call__(self, word_ids: list[int]):
        graph = self.compiler.compile_graph_from_text(list(word_ids))
        if graph.num_states == 0:
            raise ValueError("empty training graph")
        return graph


def kaldi_string_hash(text: str) -> int:
    """Kaldi's ``StringHasher`` of ``text`` as the ``int32`` seed ``align-equal-compiled`` passes to
    ``EqualAlign`` (``ans = ans * 7853 + byte`` in a 64-bit ``size_t``, then truncated).

    >>> kaldi_string_hash("a"), kaldi_string_hash("ab")
    (97, 761839)
    """
    ans = 0
    for byte in text.encode("utf-8"):
        signed = byte - 256 if byte >= 128 else byte  # a C++ char is signed here
        ans = (ans * 7853 + signed) % 2**64
    ans %= 2**32
    return ans - 2**32 if ans >= 2**31 else ans


def _utterance_sources(cuts_path, cmvn_path, wanted: set[str]):
    """``(utt_id, kaldi_id, speaker, text, load_mfcc)`` of the ``wanted`` utterances: from the pipeline's MFCC
    cuts and CMVN archive, or, when ``cuts_path`` is a :class:`~.kaldi_features.KaldiSource`, from
    a Kaldi data dir's own ``feats.scp``/``cmvn.scp`` (to train on real Kaldi's features).
    ``kaldi_id`` is the id the utterance has in a Kaldi data dir of the split (``export-kaldi``'s:
    speaker-prefixed where the corpus' ids do not sort by speaker), which seeds the equal alignment."""
    from .kaldi_features import KaldiSource

    if isinstance(cuts_path, KaldiSource):
        for utt, speaker, text, load in cuts_path.utterances(wanted):
            yield utt, utt, speaker, text, load
        return
    from lhotse import CutSet

    from weakalign.align.kaldi_data import kaldi_utterance_ids
    from weakalign.pipeline.features import load_mfcc, read_cmvn

    cmvn = read_cmvn(cmvn_path)
    cuts = CutSet.from_file(cuts_path)
    speakers = {c.id: c.supervisions[0].speaker or c.id for c in cuts}
    kaldi_ids = kaldi_utterance_ids(speakers)
    for cut in cuts:
        if cut.id in wanted:
            yield (cut.id, kaldi_ids[cut.id], speakers[cut.id], cut.supervisions[0].text or "",
                   (lambda cut=cut: load_mfcc(cut, cmvn)))


class Shard:
    """One job's utterances: features, transcripts, training graphs and current alignments.

    Methods return plain picklable results so that :mod:`~weakalign.kaldi_steps.execution` can
    run them in Dask workers. ``problems`` lists (utterance, reason) to report.
    """

    def __init__(self, lang_dir: str, cuts_path, cmvn_path: str | None, utt_ids: list[str], features=None):
        from .feature_transform import FeatureSpec
        from .lang import Lang

        self.lang_dir = str(lang_dir)
        self.lang = Lang.load(lang_dir)
        self.feature_spec = features or FeatureSpec()
        self.feats: dict[str, np.ndarray] = {}
        # Spliced frames are kept when a transform is to be estimated (LDA, MLLT) and swapped in.
        self.base_feats: dict[str, np.ndarray] = {}
        self.word_ids: dict[str, list[int]] = {}
        self.texts: dict[str, list[str]] = {}
        self.speakers: dict[str, str] = {}  # utt -> speaker (as shard_args deals them: the cut id if none)
        # Speaker-adapted training (tri3): the speaker-independent features and each speaker's fMLLR.
        self.si_feats: dict[str, np.ndarray] | None = None
        self.speaker_transforms: dict[str, np.ndarray] = {}
        self.problems: list[tuple[str, str]] = []
        self.kaldi_ids: dict[str, str] = {}
        for utt, kaldi_id, speaker, text, load in _utterance_sources(cuts_path, cmvn_path, set(utt_ids)):
            self.kaldi_ids[utt] = kaldi_id
            self.speakers[utt] = speaker
            try:
                base = self.feature_spec.base(load())
            except Exception as e:  # unreadable features / no CMVN for the speaker
                self.problems.append((utt, f"features: {e}"))
                continue
            if self.feature_spec.kind == "splice":
                self.base_feats[utt] = np.ascontiguousarray(base, dtype=np.float32)
            self.feats[utt] = self.feature_spec.transformed(base)
            oovs = [w for w in text.split() if w not in self.lang.words]
            if oovs:
                self.problems.append((utt, f"oov: {' '.join(oovs)} mapped to {self.lang.oov_word}"))
            self.word_ids[utt] = self.lang.words_to_ids(text.split(), None, utt)
            self.texts[utt] = text.split()
        self.utt_ids = [u for u in utt_ids if u in self.feats]
        self.graphs: dict = {}
        self.alignments: dict[str, np.ndarray] = {}

    def set_feature_transform(self, transform: np.ndarray) -> int:
        """Use ``base features @ transform.T`` from now on (``transform-feats`` with a new
        ``lda.mat`` / LDA+MLLT matrix); only for spliced features. Returns the dimension."""
        if self.feature_spec.kind != "splice":
            raise ValueError("a feature transform needs spliced features (FeatureSpec.lda())")
        transform = np.asarray(transform, dtype=np.float32)
        self.feats = {u: self.feature_spec.transformed(b, transform) for u, b in self.base_feats.items()}
        return int(transform.shape[0])

    # -- fMLLR (speaker-adapted training, tri3) ----------------------------------------------

    def speaker_utterances(self) -> dict[str, list[str]]:
        """speaker -> its utterances in this job (``spk2utt``)."""
        spk2utt: dict[str, list[str]] = {}
        for u in self.utt_ids:
            spk2utt.setdefault(self.speakers[u], []).append(u)
        return spk2utt

    def _keep_si_feats(self) -> None:
        if self.si_feats is None:
            self.si_feats = dict(self.feats)

    def set_speaker_transforms(self, transforms: dict[str, np.ndarray]) -> int:
        """Use each speaker's fMLLR (``transform-feats --utt2spk ark:trans.JOB``) on the speaker-
        independent features from now on; a speaker without one keeps them as they are. Returns
        how many of this job's speakers have one."""
        from .fmllr import apply_fmllr

        self._keep_si_feats()
        self.speaker_transforms = {s: np.asarray(w, dtype=np.float64) for s, w in transforms.items()
                                   if s in set(self.speakers.values())}
        self.feats = {u: apply_fmllr(f, self.speaker_transforms[self.speakers[u]])
                      if self.speakers[u] in self.speaker_transforms else f for u, f in self.si_feats.items()}
        return len(self.speaker_transforms)

    def get_speaker_transforms(self) -> dict[str, np.ndarray]:
        return dict(self.speaker_transforms)

    def use_si_features(self) -> None:
        """Back to the speaker-independent features (no fMLLR)."""
        self.set_speaker_transforms({})

    def fmllr_stats(self, trans_model, am, silence_phones: list[int], silence_weight: float = 0.0):
        """speaker -> ``FmllrStats`` of the current alignments on the current features (``ali-to-post |
        weight-silence-post silence_weight | gmm-est-fmllr``'s accumulation)."""
        from .fmllr import FmllrStats, accumulate_fmllr_stats
        from .tree import TransitionTables

        tables = TransitionTables(trans_model)
        params = GmmParams.from_am(am)
        silence = np.asarray(list(silence_phones), dtype=np.int64)
        out = {}
        for spk, utts in self.speaker_utterances().items():
            stats = FmllrStats.zeros(am.dim)
            for u in utts:
                if u not in self.alignments:
                    continue
                ali = self.alignments[u]
                weights = np.where(np.isin(tables.phone[ali], silence), silence_weight, 1.0)
                accumulate_fmllr_stats(params, self.feats[u], tables.pdf[ali], weights, stats)
            out[spk] = stats
        return out

    def update_fmllr(self, trans_model, am, silence_phones: list[int], silence_weight: float = 0.0,
                     **fmllr_opts) -> dict[str, dict]:
        """One fMLLR estimation per speaker from the current alignments and features (identity start),
        composed after each speaker's current transform (``gmm-est-fmllr`` then ``compose-transforms
        --b-is-affine=true``), and the features adapted with the result. Returns speaker -> info
        (:func:`~.fmllr.estimate_fmllr`'s)."""
        from .fmllr import compose_affine, estimate_fmllr, identity_transform

        infos, transforms = {}, dict(self.speaker_transforms)
        for spk, stats in self.fmllr_stats(trans_model, am, silence_phones, silence_weight).items():
            update, info = estimate_fmllr(stats, **fmllr_opts)
            infos[spk] = info
            transforms[spk] = compose_affine(update, transforms.get(spk, identity_transform(am.dim)))
        self.set_speaker_transforms(transforms)
        return infos

    def acc_stats_twofeats(self, trans_model, am) -> tuple[GmmStats, np.ndarray]:
        """``gmm-acc-stats-twofeats``: Gaussian posteriors from the current (adapted) features, statistics
        of the speaker-independent ones (train_sat.sh's ``final.alimdl``)."""
        return self.acc_stats(trans_model, am, stats_feats=self.si_feats or self.feats)

    # -- graphs and alignments --------------------------------------------------------------

    def compile_graphs(self, trans_model, ctx_dep) -> list[tuple[str, str]]:
        """As ``compile-train-graphs`` with transition and self-loop scales 0."""
        compile_graph = TrainingGraphs(self.lang, trans_model, ctx_dep)
        self.graphs = {}
        problems = []
        for utt in self.utt_ids:
            try:
                self.graphs[utt] = compile_graph(self.word_ids[utt])
            except Exception as e:
                problems.append((utt, f"graph compilation failed: {e}"))
        return problems

    def equal_align(self) -> dict:
        """As ``align-equal-compiled``: a path through each graph with frames spread evenly."""
        import kaldifst

        self.alignments = {}
        failed = []
        for utt in self.utt_ids:
            if utt not in self.graphs:
                continue
            num_frames = len(self.feats[utt])
            # Seeded as align-equal-compiled seeds it (Kaldi's hash of the utterance's Kaldi id), so that
            # the random path is Kaldi's and does not depend on the number of jobs.
            seed = kaldi_string_hash(self.kaldi_ids.get(utt, utt))
            ok, path = kaldifst.equal_align(self.graphs[utt], num_frames, rand_seed=seed)
            ali = kaldifst.get_linear_symbol_sequence(path)[1] if ok else []
            if not ok or len(ali) != num_frames:
                failed.append((utt, f"too short for its transcript: {num_frames} frames (equal alignment failed)"))
                continue
            self.alignments[utt] = np.asarray(ali, dtype=np.int32)
        return {"aligned": len(self.alignments), "failed": failed, "retried": 0, "frames": 0, "like": 0.0}

    def align(self, trans_model, am, beam: float, retry_beam: float,
              acoustic_scale: float = ACOUSTIC_SCALE) -> dict:
        """As ``gmm-align-compiled``: add the current model's transition probabilities to each
        graph, Viterbi-align, retry with ``retry_beam`` on failure."""
        import kaldi_hmm_gmm as khg
        import kaldifst

        start = time.perf_counter()
        config = khg.AlignConfig(beam=beam, retry_beam=retry_beam)
        self.alignments = {}
        failed, retried, like, frames = [], 0, 0.0, 0
        for utt in self.utt_ids:
            if utt not in self.graphs:
                continue
            fst = kaldifst.StdVectorFst(self.graphs[utt])
            khg.add_transition_probs(trans_model, [], TRANSITION_SCALE, SELF_LOOP_SCALE, fst)
            decodable = khg.DecodableAmDiagGmmScaled(am, trans_model, self.feats[utt], acoustic_scale)
            done, error, n_retried, utt_like, n_frames, ali, _ = khg.align_utterance_wrapper(
                config, utt, acoustic_scale, fst, decodable, 0, 0, 0, 0.0, 0)
            retried += n_retried
            if not done or len(ali) != len(self.feats[utt]):
                failed.append((utt, f"alignment failed: not even with retry beam {retry_beam}"))
                continue
            self.alignments[utt] = np.asarray(ali, dtype=np.int32)
            like += utt_like
            frames += n_frames
        # seconds: the job's own time, which tells a call's cost in the execution layer from its work.
        return {"aligned": len(self.alignments), "failed": failed, "retried": retried,
                "frames": frames, "like": like, "seconds": time.perf_counter() - start}

    # -- statistics ---------------------------------------------------------------------------

    def feature_stats(self, utt_ids=None) -> tuple[float, np.ndarray, np.ndarray]:
        """(count, sum, sum of squares) of the frames of ``utt_ids`` (default all) this job holds,
        for ``gmm-init-mono``."""
        utts = [u for u in self.utt_ids if utt_ids is None or u in set(utt_ids)]
        if not utts:
            dim = next(iter(self.feats.values())).shape[1] if self.feats else 0
            return 0.0, np.zeros(dim), np.zeros(dim)
        f = np.concatenate([self.feats[u] for u in utts]).astype(np.float64)
        return float(len(f)), f.sum(0), (f * f).sum(0)

    def get_kaldi_ids(self) -> dict[str, str]:
        """Utterance id -> its id in a Kaldi data dir (see :func:`_utterance_sources`)."""
        return {u: self.kaldi_ids[u] for u in self.utt_ids}

    def acc_stats(self, trans_model, am, stats_feats: dict[str, np.ndarray] | None = None) -> tuple[GmmStats, np.ndarray]:
        """GMM statistics and transition counts of the current alignments (``stats_feats``: utt -> the
        frames to accumulate with the current features' posteriors, see :func:`accumulate_gmm_stats`)."""
        utts = [u for u in self.utt_ids if u in self.alignments]
        tid2pdf = np.asarray(trans_model.id2pdf_id, dtype=np.int64)
        params = GmmParams.from_am(am)
        if not utts:
            return GmmStats.zeros(len(params.gconsts), am.dim), np.zeros(trans_model.num_transition_ids + 1)
        ali = np.concatenate([self.alignments[u] for u in utts])
        feats = np.concatenate([self.feats[u] for u in utts])
        other = None if stats_feats is None else np.concatenate([stats_feats[u] for u in utts])
        stats = accumulate_gmm_stats(params, feats, tid2pdf[ali], stats_feats=other)
        return stats, transition_counts([ali], trans_model.num_transition_ids)

    def tree_stats(self, trans_model, ci_phones: list[int]):
        from .tree import TransitionTables, accumulate_tree_stats

        tables = TransitionTables(trans_model)
        items = [(self.alignments[u], self.feats[u]) for u in self.utt_ids if u in self.alignments]
        return accumulate_tree_stats(items, tables, set(ci_phones))

    def lda_stats(self, trans_model, silence_phones: list[int]):
        """``acc-lda`` statistics of the base (spliced, untransformed) features, pdfs of the current
        alignments as classes, silence frames weighted 0."""
        from .lda_mllt import accumulate_lda_stats
        from .tree import TransitionTables

        items = [(self.alignments[u], self.base_feats[u]) for u in self.utt_ids if u in self.alignments]
        # The dimension from the data where there is any (the MFCC config sets it), so that a job
        # without alignments still returns statistics the others' add to.
        dim = next(iter(self.base_feats.values())).shape[1] if self.base_feats else self.feature_spec.base_dim()
        return accumulate_lda_stats(items, TransitionTables(trans_model), silence_phones, trans_model.num_pdfs, dim)

    def mllt_stats(self, trans_model, am, silence_phones: list[int]):
        """``gmm-acc-mllt`` statistics of the current features and alignments, silence weighted 0."""
        from .lda_mllt import MlltStats, accumulate_mllt_stats, frame_weights
        from .tree import TransitionTables

        utts = [u for u in self.utt_ids if u in self.alignments]
        if not utts:
            return MlltStats.zeros(am.dim)
        tables = TransitionTables(trans_model)
        ali = np.concatenate([self.alignments[u] for u in utts])
        feats = np.concatenate([self.feats[u] for u in utts])
        return accumulate_mllt_stats(GmmParams.from_am(am), feats, tables.pdf[ali],
                                     frame_weights(ali, tables.phone, silence_phones))

    def convert_alignments(self, old_model, new_model, ctx_dep) -> int:
        from .tree import TransitionTables, convert_alignment

        old, new = TransitionTables(old_model), TransitionTables(new_model)
        self.alignments = {u: convert_alignment(a, old, new, ctx_dep).astype(np.int32)
                           for u, a in self.alignments.items()}
        return len(self.alignments)

    def set_alignments(self, alignments: dict[str, np.ndarray]) -> int:
        """Take this shard's utterances' alignments from ``alignments`` (e.g. a previous model's)."""
        self.alignments = {u: np.asarray(alignments[u], dtype=np.int32) for u in self.utt_ids if u in alignments}
        return len(self.alignments)

    def get_alignments(self) -> dict[str, np.ndarray]:
        return dict(self.alignments)

    def get_problems(self) -> list[tuple[str, str]]:
        return list(self.problems)

    def num_frames(self) -> dict[str, int]:
        return {u: len(self.feats[u]) for u in self.utt_ids}

    def decode(self, hclg_path: str, trans_model, am, words_path: str, acoustic_scale: float = ACOUSTIC_SCALE,
               keep_best_paths: bool = False, **decode_opts) -> dict[str, list[str]]:
        """Decode this shard's utterances with ``graph.decode_set`` (for WER sanity checks).
        ``keep_best_paths``: the best paths' transition-ids become the shard's alignments (the first
        pass of ``decode_fmllr.sh``, from which the speakers' fMLLR is estimated)."""
        from .graph import decode_set
        import kaldi_hmm_gmm as khg
        import kaldifst

        cached = getattr(self, "_hclg", None)
        if cached is None or cached[0] != str(hclg_path):
            self._hclg = cached = (str(hclg_path), kaldifst.StdVectorFst.read(str(hclg_path)))
        hclg = cached[1]
        decodables = ((u, khg.DecodableAmDiagGmmScaled(am, trans_model, self.feats[u], acoustic_scale))
                      for u in self.utt_ids)
        paths: dict | None = {} if keep_best_paths else None
        hyps = decode_set(hclg, decodables, words_path, acoustic_scale=acoustic_scale, progress=False,
                          best_paths=paths, **decode_opts)
        if keep_best_paths:
            self.alignments = {u: np.asarray(a, dtype=np.int32) for u, a in paths.items()
                               if len(a) == len(self.feats[u])}
        return hyps

    def _loglike_decoder(self, hclg_path: str, trans_model, penalty: float, beam: float):
        """A :class:`~.grid_score.LoglikeDecoder` over ``hclg_path`` (with ``penalty`` per word),
        cached for the shard's next call with the same graph."""
        from .grid_score import LoglikeDecoder, penalised_graph
        import kaldifst

        key = (str(hclg_path), penalty, beam)
        cached = getattr(self, "_grid_decoder", None)
        if cached is None or cached[0] != key:
            graph = penalised_graph(kaldifst.StdVectorFst.read(str(hclg_path)), penalty)
            self._grid_decoder = cached = (key, LoglikeDecoder(graph, trans_model, beam=beam))
        return cached[1]

    def _pdf_loglikes(self, am):
        from .grid_score import gmm_pdf_loglikes

        params = GmmParams.from_am(am)
        return ((u, gmm_pdf_loglikes(params, self.feats[u])) for u in self.utt_ids)

    def grid_candidates(self, hclg_path: str, trans_model, am, lm_weights, beam: float = 13.0) -> dict:
        """This shard's best paths at each LM weight (:func:`.grid_score.decode_candidates`)."""
        from .grid_score import decode_candidates

        return decode_candidates(self._loglike_decoder(hclg_path, trans_model, 0.0, beam), self._pdf_loglikes(am),
                                 lm_weights)

    def decode_at(self, hclg_path: str, trans_model, am, words_path: str, lm_weight: float, penalty: float,
                  beam: float = 13.0) -> dict[str, list[str]]:
        """This shard's hypotheses at one grid point, decoded exactly (:func:`.grid_score.decode_point`)."""
        from .graph import _word_table, word_strings
        from .grid_score import decode_point

        table = _word_table(words_path)
        hyps = decode_point(self._loglike_decoder(hclg_path, trans_model, penalty, beam), self._pdf_loglikes(am),
                            lm_weight)
        return {u: word_strings(table, ws) for u, ws in hyps.items()}

    def references(self) -> dict[str, list[str]]:
        return {u: self.texts[u] for u in self.utt_ids}


# ---------------------------------------------------------------------------------------------
# training-loop helpers shared by the mono and tri1 stages


def split_by_speaker(utts: dict[str, tuple[str, float]], nj: int) -> list[list[str]]:
    """Utterance ids (``utt -> (speaker, duration)``) in ``nj`` jobs, whole speakers per job.

    Speakers are dealt, longest first, to the job with the least audio so far; ids keep
    their sorted order inside a job.
    """
    by_spk: dict[str, list[str]] = {}
    dur: dict[str, float] = {}
    for utt in sorted(utts):
        spk, d = utts[utt]
        by_spk.setdefault(spk, []).append(utt)
        dur[spk] = dur.get(spk, 0.0) + d
    nj = max(1, min(nj, len(by_spk)))
    jobs: list[list[str]] = [[] for _ in range(nj)]
    load = [0.0] * nj
    for spk in sorted(by_spk, key=lambda s: (-dur[s], s)):
        j = min(range(nj), key=lambda k: (load[k], k))
        jobs[j].extend(by_spk[spk])
        load[j] += dur[spk]
    return [sorted(j) for j in jobs]


def shard_args(ws, split: str, nj: int, features=None) -> list[tuple]:
    """Per job ``Shard`` arguments for a split: whole speakers per job (see ``split_by_speaker``);
    ``features`` a :class:`~weakalign.kaldi_steps.feature_transform.FeatureSpec` (default Δ+ΔΔ)."""
    from lhotse import CutSet

    cuts = CutSet.from_file(ws.mfcc_cuts(split))
    utts = {c.id: (c.supervisions[0].speaker or c.id, float(c.duration)) for c in cuts}
    return [(str(ws.lang), str(ws.mfcc_cuts(split)), str(ws.cmvn(split)), job, features)
            for job in split_by_speaker(utts, nj)]


@dataclass
class AlignSummary:
    aligned: int
    retried: int
    failed: list
    avg_like: float  # per frame, as align_utterance_wrapper reports it (gmm-align-compiled's log)

    def as_dict(self) -> dict:
        return {"aligned": self.aligned, "retried": self.retried, "failed": len(self.failed),
                "avg_like_per_frame": self.avg_like}


def pool_align(pool, trans_model, am, beam: float, retry_beam: float) -> AlignSummary:
    res = pool.call("align", trans_model, am, beam, retry_beam)
    frames = sum(r["frames"] for r in res)
    return AlignSummary(sum(r["aligned"] for r in res), sum(r["retried"] for r in res),
                        [f for r in res for f in r["failed"]],
                        sum(r["like"] for r in res) / max(frames, 1))


def run_em_iterations(pool, tm, am, *, stage: str, num_iters: int, realign_iters: set, beams,
                      num_gauss: int, inc_gauss: int, max_iter_inc: int, power: float,
                      problems_log, history: list, before_accumulate=None):
    """Iterations 1..num_iters-1 of Viterbi EM, as train_mono.sh / train_deltas.sh run them.

    Realign on ``realign_iters`` with ``beams(it) -> (beam, retry_beam)``, accumulate, update with
    mixing up toward ``num_gauss`` (raised by ``inc_gauss`` up to ``max_iter_inc``). Appends one
    entry per iteration to ``history`` and returns the updated ``am``.

    ``before_accumulate(it, am) -> (am, info)``, when given, runs after the realignment and before
    the statistics (train_lda_mllt.sh estimates MLLT there and transforms the features and means);
    a non-empty ``info`` dict goes into that iteration's ``history`` entry.
    """
    from tqdm import tqdm

    last_align = None
    for it in tqdm(range(1, num_iters), desc=f"{stage} iterations", leave=False):
        realigned = it in realign_iters
        if realigned:
            last_align = pool_align(pool, tm, am, *beams(it))
            problems_log.add(last_align.failed, transient=True)
        extra = {}
        if before_accumulate is not None:
            am, extra = before_accumulate(it, am)
        stats, counts = pool_acc_stats(pool, tm, am)
        am, info = update_model(tm, am, stats, counts, mixup=num_gauss, power=power)
        avg = stats.loglike / max(stats.frames, 1)
        history.append({"iter": it, "avg_loglike_per_frame": avg, "num_gauss": am.num_gauss,
                        "trans_objf_impr_per_frame": info["trans_objf_impr_per_frame"],
                        **({"realigned": last_align.as_dict()} if realigned else {}), **(extra or {})})
        log.info("%s iter %d%s: avg loglike/frame %.4f over %d frames, %d Gaussians",
                 stage, it, " (realigned)" if realigned else "", avg, stats.frames, am.num_gauss)
        if it <= max_iter_inc:
            num_gauss += inc_gauss
    return am


def pool_equal_align(pool) -> AlignSummary:
    res = pool.call("equal_align")
    return AlignSummary(sum(r["aligned"] for r in res), 0, [f for r in res for f in r["failed"]], 0.0)


def pool_acc_stats(pool, trans_model, am) -> tuple[GmmStats, np.ndarray]:
    """Sum of every job's statistics, in job order (deterministic for a given ``nj``)."""
    parts = pool.call("acc_stats", trans_model, am)
    stats, counts = parts[0]
    for s, c in parts[1:]:
        stats.add(s)
        counts = counts + c
    return stats, counts


def write_model_dir(out_dir, trans_model, am, ctx_dep, occs: np.ndarray, lang_dir,
                    alignments: list[dict[str, np.ndarray]]) -> list:
    """Kaldi's experiment-dir files: final.mdl, tree, final.occs, phones.txt, num_jobs, ali.N.gz."""
    import shutil
    from pathlib import Path

    from weakalign.pipeline.io import atomic_open, atomic_path

    from .kaldi_io import write_ali_archive, write_kaldi_vector, write_model, write_tree

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Stale archives from an earlier run with more jobs would be read as part of this one.
    for old in out.glob("ali.*.gz"):
        old.unlink()
    write_model(out / "final.mdl", trans_model, am)
    write_tree(out / "tree", ctx_dep)
    write_kaldi_vector(out / "final.occs", np.asarray(occs, dtype=np.float64))
    with atomic_path(out / "phones.txt") as tmp:
        shutil.copyfile(Path(lang_dir) / "phones.txt", tmp)
    written = [out / "final.mdl", out / "tree", out / "final.occs", out / "phones.txt"]
    for j, ali in enumerate(alignments, start=1):
        path = out / f"ali.{j}.gz"
        write_ali_archive(path, sorted(ali.items()))
        written.append(path)
    with atomic_open(out / "num_jobs") as f:
        f.write(f"{len(alignments)}\n")
    written.append(out / "num_jobs")
    return written


class ProblemLog:
    """Bad input met by the jobs, each utterance named once per kind of problem.

    OOV words (mapped to ``<UNK>``; the utterance is kept) are warned about and counted in
    ``oov``; failures of an intermediate alignment (``transient=True``: the utterance just
    sits out that pass's statistics) are counted per utterance in ``transient`` and said in
    one line at the end (:meth:`log_transient`), not once per pass; anything else (no
    features, graph failure, failed final alignment) is a skip in the stage's
    :class:`SkipReport`, which counts an utterance once, under its first cause.
    """

    def __init__(self, report):
        self.report = report
        self.oov: list[str] = []
        self.transient: dict[str, int] = {}
        self.passes = 0
        self._seen: set = set()

    def add(self, problems, transient: bool = False) -> None:
        if transient:
            self.passes += 1
        for utt, reason in problems:
            kind = reason.split(":")[0]
            if transient:
                self.transient[utt] = self.transient.get(utt, 0) + 1
                continue
            if (utt, kind) in self._seen:
                continue
            self._seen.add((utt, kind))
            if kind == "oov":
                self.oov.append(utt)
                self.report.warn(utt, reason)
            else:
                self.report.skip(utt, reason)

    def add_all(self, results) -> None:
        for problems in results:
            self.add(problems)

    def log_transient(self) -> None:
        """One line for every utterance that failed intermediate alignment passes, with how many."""
        if self.transient:
            log.warning("%s: %d utterance(s) failed intermediate alignment passes and sat out those passes' "
                        "statistics: %s", self.report.stage, len(self.transient),
                        ", ".join(f"{u} ({n} of {self.passes})" for u, n in sorted(self.transient.items())))


#: Acoustic scales tried on dev (1/LM-weight for LM weights 8..25, as Kaldi's score.sh range).
DECODE_SCALES = (0.04, 0.05, 0.0625, 0.0833, 0.1, 0.125)


def _decode_split(ws, split, executor, hclg, words, trans_model, am, scales, beam, features=None):
    from .graph import compute_wer

    results = {}
    with executor.shards(shard_args(ws, split, executor.nj, features)) as pool:
        refs = {}
        for r in pool.call("references"):
            refs.update(r)
        for scale in scales:
            hyps = {}
            for h in pool.call("decode", str(hclg), trans_model, am, str(words), scale, beam=beam):
                hyps.update(h)
            results[scale] = compute_wer(refs, hyps)
            log.info("decode %s at acoustic scale %.4g: WER %.2f%%", split, scale, results[scale]["wer"])
    return results


def _scales_wer(ws, split_executor, wer_set, trans_model, am, hclg, words, beam, scales, features) -> dict:
    """The old check: one decode of dev per acoustic scale, the best scale applied to ``wer_set``."""
    dev = _decode_split(ws, "dev", split_executor, hclg, words, trans_model, am, scales, beam, features)
    best = min(scales, key=lambda s: (dev[s]["wer"], s))
    result = dev[best] if wer_set == "dev" else _decode_split(ws, wer_set, split_executor, hclg, words, trans_model,
                                                               am, [best], beam, features)[best]
    return {**result, "scoring": "scales", "acoustic_scale": best,
            "dev_wer": {str(s): dev[s]["wer"] for s in scales}}


def _grid_wer(ws, executor, wer_set, trans_model, am, hclg, words, beam, grid, features) -> dict:
    """Kaldi's ``score.sh`` way (:mod:`.grid_score`): one decode of dev per LM weight, the paths
    rescored over ``grid``, the point picked on dev, ``wer_set`` decoded once at that point."""
    from .graph import _word_table, compute_wer, word_strings
    from .grid_score import pick_point, rescore

    table = _word_table(words)
    with executor.shards(shard_args(ws, "dev", executor.nj, features)) as pool:
        refs, candidates = {}, {}
        for r in pool.call("references"):
            refs.update(r)
        for c in pool.call("grid_candidates", str(hclg), trans_model, am, list(grid.lm_weights), beam=beam):
            candidates.update(c)
    dev = {pt: compute_wer(refs, {u: word_strings(table, ids) for u, ids in hyps.items()})
           for pt, hyps in rescore(candidates, grid).items()}
    w, p = pick_point(dev)
    log.info("grid scoring on dev: best LM weight %s, penalty %s: WER %.2f%% (%d paths per utterance on average)",
             w, p, dev[(w, p)]["wer"], sum(map(len, candidates.values())) / max(len(candidates), 1))
    if wer_set == "dev":
        result = dev[(w, p)]
    else:
        with executor.shards(shard_args(ws, wer_set, executor.nj, features)) as pool:
            refs, hyps = {}, {}
            for r in pool.call("references"):
                refs.update(r)
            for h in pool.call("decode_at", str(hclg), trans_model, am, str(words), w, p, beam=beam):
                hyps.update(h)
        result = compute_wer(refs, hyps)
    return {**result, "scoring": "kaldi-grid", "grid": grid.as_dict(), "lm_weight": w, "penalty": p,
            "acoustic_scale": round(1.0 / w, 6),
            "dev_wer": {f"{pw}_{pp}": r["wer"] for (pw, pp), r in dev.items()}}


def decode_wer(ws, model_dir, wer_set: str, executor, trans_model, am, *, lm=None, beam: float = 13.0,
               scales=DECODE_SCALES, features=None, scoring: str = "kaldi-grid", grid=None) -> dict:
    """WER sanity check: build HCLG for ``model_dir`` (``graph.make_graph``), choose the scoring
    point on ``dev`` only and report ``wer_set`` at it, in ``executor.nj`` jobs on ``executor``
    (:class:`~.execution.Executor`). ``features``: the model's
    :class:`~weakalign.kaldi_steps.feature_transform.FeatureSpec`.

    ``scoring="kaldi-grid"`` (default): Kaldi's ``local/score.sh`` LM weight x insertion penalty
    ``grid`` (:class:`~.grid_score.ScoringGrid`, default 7..17 x 0/0.5/1), :func:`_grid_wer`.
    ``scoring="scales"``: the old search, one decode per acoustic scale in ``scales``, no penalty.
    Returns ``compute_wer``'s dict plus the scoring method, the chosen point and ``dev_wer``.
    """
    from pathlib import Path

    from .graph import make_graph
    from .grid_score import ScoringGrid

    graph_dir = Path(model_dir) / "graph"
    make_graph(ws.lang, model_dir, graph_dir, **({"lm": lm} if lm else {}))
    hclg, words = graph_dir / "HCLG.fst", graph_dir / "words.txt"
    if scoring == "kaldi-grid":
        result = _grid_wer(ws, executor, wer_set, trans_model, am, hclg, words, beam, grid or ScoringGrid(), features)
        point = f"LM weight {result['lm_weight']}, penalty {result['penalty']}"
    elif scoring == "scales":
        result = _scales_wer(ws, executor, wer_set, trans_model, am, hclg, words, beam, scales, features)
        point = f"acoustic scale {result['acoustic_scale']:.4g}"
    else:
        raise ValueError(f"unknown WER scoring {scoring!r}: use 'kaldi-grid' or 'scales'")
    log.info("%s: WER on %s = %.2f%% at %s (chosen on dev)", Path(model_dir).name, wer_set, result["wer"], point)
    return result


def stage_diagnostics(num_utts: int, final: AlignSummary, final_stats, am, history: list, problems_log,
                      report, **extra) -> dict:
    """The ``diagnostics.json`` of a GMM stage (before its WER check), plus stage-specific ``extra``.
    Says the intermediate alignment failures in one line (:meth:`ProblemLog.log_transient`)."""
    problems_log.log_transient()
    return {
        "utterances": num_utts,
        "aligned": final.aligned,
        "retried": final.retried,
        "failed": len(final.failed),
        "failed_utterances": [u for u, _ in final.failed],
        "avg_loglike_per_frame": final_stats.loglike / max(final_stats.frames, 1),
        "avg_align_like_per_frame": final.avg_like,
        "frames": final_stats.frames,
        "num_pdfs": am.num_pdfs,
        "num_gauss": am.num_gauss,
        **extra,
        "wer": None,
        "wer_set": None,
        "wer_details": None,
        "iterations": history,
        "oov_utterances": len(problems_log.oov),
        "intermediate_alignment_failures": dict(sorted(problems_log.transient.items())),
        "skipped": report.summary(),
    }


def finish_gmm_stage(ws, out_dir, diagnostics: dict, report, outputs: list, *, decode: bool, wer_set: str,
                     executor, trans_model, am, decode_beam: float, decode_scales, features=None,
                     decode_scoring: str = "kaldi-grid", wer_check=None) -> dict:
    """Write diagnostics, run the WER check if asked, and return the stage summary. ``wer_check``:
    a function with :func:`decode_wer`'s arguments and result to run instead of it (tri3's two passes)."""
    path = Path(out_dir) / "diagnostics.json"
    # Written before decoding too: the model and alignments are usable even if decoding is cut short.
    write_json(path, diagnostics)
    if decode:
        wer = (wer_check or decode_wer)(ws, out_dir, wer_set, executor, trans_model, am, beam=decode_beam,
                                        scales=decode_scales, features=features, scoring=decode_scoring)
        diagnostics.update({"wer": wer["wer"], "wer_set": wer_set, "wer_details": wer})
        write_json(path, diagnostics)
    report.log_summary()
    return {"outputs": [str(p) for p in outputs] + [str(path)],
            **{k: diagnostics[k] for k in ("utterances", "aligned", "failed", "num_pdfs", "num_gauss",
                                           "avg_loglike_per_frame", "wer", "wer_set")},
            **report.summary()}
