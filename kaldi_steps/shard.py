"""One job's share of a split (Kaldi's ``JOB``): its utterances, features, graphs and alignments.

A :class:`Shard` holds one job's utterances: features (MFCC + per-speaker CMVN, then Δ+ΔΔ or
spliced and transformed: :mod:`~weakalign.kaldi_steps.feature_transform`), training graphs
compiled once without transition probabilities, and the current alignments; its methods are
what Kaldi's per-job binaries do (``align-equal-compiled``, ``gmm-align-compiled``,
``gmm-acc-stats-ali``, ``acc-tree-stats``, ``gmm-est-fmllr``, ``gmm-latgen-faster`` ...).
:func:`shard_args` deals a split's speakers to the jobs (:func:`kaldi_shard_args` a Kaldi data
dir's), and :mod:`weakalign.kaldi_steps.execution` runs the shards (in Dask workers).

>>> split_by_speaker({"a": ("s1", 3.0), "b": ("s2", 1.0), "c": ("s1", 1.0)}, 2)
[['a', 'c'], ['b']]
"""

from __future__ import annotations

import time

import numpy as np

from .diag_gmm import GmmParams, GmmStats, accumulate_gmm_stats, transition_counts
from .kaldi_features import KaldiSource, read_data_dir

ACOUSTIC_SCALE = 0.1  # Kaldi's scale_opts: --acoustic-scale=0.1 --self-loop-scale=0.1
SELF_LOOP_SCALE = 0.1
TRANSITION_SCALE = 1.0


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


def kaldi_shard_args(data_dir, lang_dir, nj: int, root=None, features=None) -> list[tuple]:
    """``Shard`` arguments for a Kaldi data dir's features, whole speakers per job (as
    :func:`shard_args` for the pipeline's own features)."""
    utts = read_data_dir(data_dir, root)
    by_utt = {u: (x.speaker, 1.0) for u, x in utts.items()}
    return [(str(lang_dir), KaldiSource(str(data_dir), str(root) if root else None), None, job, features)
            for job in split_by_speaker(by_utt, nj)]


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
    if isinstance(cuts_path, KaldiSource):
        for utt, speaker, text, load in cuts_path.utterances(wanted):
            yield utt, utt, speaker, text, load
        return
    from lhotse import CutSet

    from weakalign.align.kaldi_data import kaldi_utterance_ids
    from weakalign.pipeline.acoustic_features import load_mfcc, read_cmvn

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

        hclg = self._graph(hclg_path)
        decodables = ((u, khg.DecodableAmDiagGmmScaled(am, trans_model, self.feats[u], acoustic_scale))
                      for u in self.utt_ids)
        paths: dict | None = {} if keep_best_paths else None
        hyps = decode_set(hclg, decodables, words_path, acoustic_scale=acoustic_scale, progress=False,
                          best_paths=paths, **decode_opts)
        if keep_best_paths:
            self.alignments = {u: np.asarray(a, dtype=np.int32) for u, a in paths.items()
                               if len(a) == len(self.feats[u])}
        return hyps

    def _graph(self, hclg_path: str):
        """The HCLG at ``hclg_path``, read once for the shard's calls on the same graph."""
        import kaldifst

        cached = getattr(self, "_hclg", None)
        if cached is None or cached[0] != str(hclg_path):
            self._hclg = cached = (str(hclg_path), kaldifst.StdVectorFst.read(str(hclg_path)))
        return cached[1]

    def _loglike_decoder(self, hclg_path: str, trans_model, penalty: float, beam: float):
        """A :class:`~.grid_score.LoglikeDecoder` over the shard's HCLG (:meth:`_graph`) with ``penalty``
        per word, cached for the shard's next call with the same graph."""
        from .grid_score import LoglikeDecoder, penalised_graph

        key = (str(hclg_path), penalty, beam)
        cached = getattr(self, "_grid_decoder", None)
        if cached is None or cached[0] != key:
            decoder = LoglikeDecoder(penalised_graph(self._graph(hclg_path), penalty), trans_model, beam=beam)
            self._grid_decoder = cached = (key, decoder)
        return cached[1]

    def _pdf_loglikes(self, am):
        from .grid_score import gmm_pdf_loglikes

        params = GmmParams.from_am(am)
        return ((u, gmm_pdf_loglikes(params, self.feats[u])) for u in self.utt_ids)

    def grid_candidates(self, hclg_path: str, trans_model, am, grid, beam: float = 13.0) -> dict:
        """This shard's paths to rescore over ``grid``, found by its method (:func:`.lattice.grid_candidates`)."""
        from .lattice import grid_candidates

        return grid_candidates(self._graph(hclg_path), trans_model, self._pdf_loglikes(am), grid, beam)

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
