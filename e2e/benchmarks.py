"""Benchmarks of the E2E trainer (``weakalign bench``; each writes ``exp/bench/<name>.json``).

``e2e_train``: training throughput (10 ms input frames per second of optimizer
steps) and peak RSS of ``baseline`` and ``aux_ls0.5_l3`` on the same batches, each
config in a fresh process so its peak memory is its own; the ratio of their step
times is the aux-loss overhead (goal <= 1.10). Also the share of the machine's
fp32 matmul throughput (best of 20 1024x1024 ``torch.matmul``) the training step reaches:
FLOPs of conv/linear/attention counted by ``torch.utils.flop_counter.FlopCounterMode``,
LSTM FLOPs (which it does not count) analytically, ``2·4H(I+H)`` per frame and
direction forward, backward counted as twice the forward.

The aux config needs ``senone`` labels: the exported alignment cuts when they exist;
otherwise stand-in labels (the frame energy quantised into 100 bins) are attached to
the fbank cuts -- the same cost for the loss, and said so in the result (``labels``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..pipeline.workspace import Workspace

NUM_BATCHES = 6
MAX_DURATION = 60.0
STANDIN_SENONES = 100


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best-of-``repeats`` fp32 ``torch.matmul`` throughput of this process's threads, GFLOP/s.

    Short products, best of many: on a shared machine that is the closest to its unloaded peak.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    return best_gflops(lambda: torch.matmul(a, b), 2 * n ** 3, repeats)


def best_gflops(product, flops: int, repeats: int = 20) -> float:
    """GFLOP/s of the fastest of ``repeats`` calls of ``product`` (``flops`` each), after one warm-up call."""
    product()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def lstm_flops_hooks(model: torch.nn.Module) -> tuple[list, list]:
    """Forward hooks adding each ``nn.LSTM`` call's forward FLOPs to a list."""
    counts, handles = [], []

    def hook(module, inputs, _output):
        x = inputs[0]
        B, T = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
        H, I = module.hidden_size, module.input_size
        dirs = 2 if module.bidirectional else 1
        flops = 0
        for layer in range(module.num_layers):
            in_dim = I if layer == 0 else H * dirs
            flops += dirs * B * T * 2 * 4 * H * (in_dim + H)
        counts.append(flops)

    for m in model.modules():
        if isinstance(m, torch.nn.LSTM):
            handles.append(m.register_forward_hook(hook))
    return counts, handles


def step_flops(model, batch) -> float:
    """FLOPs of one training step (forward + backward) on ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    counts, handles = lstm_flops_hooks(model)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch)
        loss.backward()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops()) + 3.0 * sum(counts)


def _standin_cuts(cuts, storage: Path):
    from lhotse import CutSet
    from lhotse.features.io import NumpyFilesWriter

    energies = np.concatenate([np.asarray(c.load_features()).sum(1) for c in cuts])
    edges = np.quantile(energies, np.linspace(0, 1, STANDIN_SENONES + 1)[1:-1])
    out = []
    with NumpyFilesWriter(storage) as writer:
        for c in cuts:
            labels = np.digitize(np.asarray(c.load_features()).sum(1), edges).astype(np.int64)
            out.append(c.with_custom("senone", writer.store_array(c.id, labels, frame_shift=0.01, temporal_dim=0)))
    return CutSet.from_cuts(out)


class _Runner:
    """One config's model, optimizer and batches, stepping one batch at a time."""

    def __init__(self, config_name, cuts_file, stats_file, bpe_file, batch_ids, num_senones):
        from lhotse import load_manifest

        from .config import load_config
        from .data import AsrDataset
        from .build import build_model
        from .tokenizer import Tokenizer
        from .train import make_optimizer

        torch.manual_seed(0)
        cuts = load_manifest(cuts_file)
        tok = Tokenizer(bpe_file)
        dataset = AsrDataset(tok)
        self.name = config_name
        self.batches = [dataset[cuts.subset(cut_ids=ids)] for ids in batch_ids]
        self.config = {**load_config(config_name), "num_senones": num_senones}
        self.model = build_model(self.config, tok.vocab_size)
        if Path(stats_file).exists():
            self.model.cmvn.load_stats(stats_file)
        self.optimizer, self.scheduler = make_optimizer(self.model, self.config)
        first = self.batches[0]
        # The model computes padded frames too: FLOPs scale with B x T_max, throughput counts real frames.
        self.flops_per_padded_frame = step_flops(self.model, first) / first["feats"].shape[0] / first["feats"].shape[1]
        self.seconds, self.frames, self.padded = 0.0, 0, 0

    def step(self, i: int, timed: bool = True) -> None:
        from .train import train_step

        batch = self.batches[i]
        start = time.perf_counter()
        train_step(self.model, batch, self.optimizer, self.scheduler, 5.0)
        if timed:
            self.seconds += time.perf_counter() - start
            self.frames += int(batch["feat_lens"].sum())
            self.padded += batch["feats"].shape[0] * batch["feats"].shape[1]

    def result(self, peak_gflops: float) -> dict:
        gflops = self.flops_per_padded_frame * self.padded / self.seconds / 1e9
        return {"config": self.name, "frames": self.frames, "padded_frames": self.padded,
                "seconds": round(self.seconds, 3), "frames_per_s": round(self.frames / self.seconds, 1),
                "flops_per_padded_frame": round(self.flops_per_padded_frame),
                "achieved_gflops": round(gflops, 2), "share_of_matmul_peak": round(gflops / peak_gflops, 3),
                "params_m": round(sum(p.numel() for p in self.model.parameters()) / 1e6, 3)}


def _peak_rss_mb(args) -> float:
    """In a fresh process: one config's peak RSS over its training steps."""
    *runner_args, threads = args
    torch.set_num_threads(threads)
    runner = _Runner(*runner_args)
    for i in range(len(runner.batches)):
        runner.step(i)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _timed_interleaved(args_by_config: dict, threads: int) -> dict:
    """Both configs in this process, their steps interleaved, so machine load hits both alike."""
    torch.set_num_threads(threads)
    runners = {name: _Runner(*args) for name, args in args_by_config.items()}
    peak = matmul_gflops()
    for r in runners.values():
        r.step(0, timed=False)                                  # warm-up
    for i in range(1, len(next(iter(runners.values())).batches)):
        for r in runners.values():
            r.step(i)
    peak = max(peak, matmul_gflops())
    out = {name: r.result(peak) for name, r in runners.items()}
    out["matmul_gflops"] = round(peak, 1)
    return out


def bench_e2e_train(ws: Workspace, nj: int) -> dict:
    from lhotse import load_manifest

    from .data import cut_text, make_sampler
    from .tokenizer import train_bpe

    threads = max(1, nj)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if ws.ali_cuts("train").exists():
            cuts, labels = load_manifest(ws.ali_cuts("train")), "exported alignments"
        else:
            cuts = load_manifest(ws.fbank_cuts("train"))
            cuts = _standin_cuts(cuts, tmp / "senone")
            labels = "stand-in (frame-energy bins; no exported alignments found)"
        from .data import count_senones

        num_senones = count_senones(cuts)
        cuts_file = tmp / "cuts.jsonl.gz"
        cuts.to_file(cuts_file)
        bpe = tmp / "bpe.model"
        train_bpe([cut_text(c) for c in cuts], bpe, 100)
        sampler = make_sampler(cuts, MAX_DURATION, shuffle=True, seed=0)
        sampler.set_epoch(0)
        batch_ids = [list(b.ids) for _, b in zip(range(NUM_BATCHES + 1), sampler)]
        args = {name: (name, str(cuts_file), str(ws.fbank_stats), str(bpe), batch_ids, num_senones)
                for name in ("baseline", "aux_ls0.5_l3")}
        ctx = mp.get_context("spawn")
        rss = {}
        for name, a in args.items():
            with ctx.Pool(1) as pool:
                rss[name] = pool.apply(_peak_rss_mb, ((*a, threads),))
        with ctx.Pool(1) as pool:
            results = pool.apply(_timed_interleaved, (args, threads))
    peak = results.pop("matmul_gflops")
    for name in rss:
        results[name]["peak_rss_mb"] = rss[name]
    base, aux = results["baseline"], results["aux_ls0.5_l3"]
    return {
        "threads": threads, "batches": NUM_BATCHES, "max_duration": MAX_DURATION, "labels": labels,
        "num_senones": num_senones, "baseline": base, "aux_ls0.5_l3": aux,
        "aux_overhead_ratio": round(base["frames_per_s"] / aux["frames_per_s"], 3),
        "aux_overhead_goal": 1.10,
        "matmul_gflops": peak,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "share_of_matmul_peak": {k: r["share_of_matmul_peak"] for k, r in results.items()},
    }


BENCHMARKS = [("e2e_train", bench_e2e_train)]
