"""Each speaker's fMLLR statistics on the first 300 AN4 train utterances after tri3's speaker-independent
pass (what `weakalign bench gmm_systems` does in align_fmllr.sh's passes): frames, the rank of G, and
whether estimate_fmllr updates the speaker. Workspace: /work/s10gmm/ws (tri3 trained this session)."""
import kaldi_hmm_gmm  # noqa: F401
import numpy as np

from weakalign.kaldi_steps.benchmarks import MAX_UTTS, _system_shard
from weakalign.kaldi_steps.fmllr import estimate_fmllr
from weakalign.kaldi_steps.kaldi_io import read_model, read_tree
from weakalign.kaldi_steps.shard import shard_args
from weakalign.pipeline.workspace import Workspace

ws = Workspace("an4", "/work/s10gmm/ws/data", "/work/s10gmm/ws/exp")
tri3 = ws.exp / "tri3"
tm, am = read_model(tri3 / "final.mdl")
_, alimdl = read_model(tri3 / "final.alimdl")
shard = _system_shard(ws, tri3, shard_args(ws, "train", 1)[0][3][:MAX_UTTS])
shard.compile_graphs(tm, read_tree(tri3 / "tree"))
shard.align(tm, alimdl, 10.0, 40.0)
for speaker, stats in shard.fmllr_stats(tm, am, list(shard.lang.silence_phone_ids), 0.0).items():
    _, info = estimate_fmllr(stats)
    print(speaker, "frames", round(stats.beta), "rank", int(np.min(np.linalg.matrix_rank(stats.G))),
          "of", stats.dim + 1, "updated", info["updated"], info.get("reason", ""))
