"""The grid's Viterbi pass of session 24 (reduceat by depth, level-synchronous depths) against session 23's
(np.minimum.at, a per-state Python depth loop; read from git at 35cf43e), on the lattices of Kaldi's AN4 tri1
fixture dev (103 utterances, Kaldi's beams, 1/12), all 33 grid points: the same paths asserted, and the
faster of 3 alternating rounds of each, one process, 1 thread.

    OMP_NUM_THREADS=1 .venv/bin/python results/an4/wer_grid_scoring/grid_pass_speed.py
"""
import kaldi_hmm_gmm as khg  # noqa: F401  -- keep first

import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from score_kaldi_fixture import kaldi_model, split_loglikes  # noqa: E402

from weakalign.kaldi_steps import lattice as new  # noqa: E402
from weakalign.kaldi_steps.grid_score import ScoringGrid  # noqa: E402

SESSION_23 = "35cf43e"


def old_module():
    source = subprocess.run(["git", "show", f"{SESSION_23}:kaldi_steps/lattice.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[3]).stdout
    module = types.ModuleType("weakalign.kaldi_steps.lattice_session23")
    module.__package__ = "weakalign.kaldi_steps"
    sys.modules[module.__name__] = module
    exec(compile(source, "lattice_session23.py", "exec"), module.__dict__)
    return module


def main():
    tm, am, hclg, words, params = kaldi_model("tri1")
    decoder = new.LatticeDecoder(hclg, tm)
    lattices = [decoder.lattice(u, x, 1 / 12) for u, x in split_loglikes("dev", params).items()]
    points, old = ScoringGrid().points, old_module()
    assert old.grid_best_paths(lattices, points) == new.grid_best_paths(lattices, points)
    times = {"session23": [], "session24": []}
    for _ in range(3):
        for name, module in (("session23", old), ("session24", new)):
            start = time.perf_counter()
            module.grid_best_paths(lattices, points)
            times[name].append(time.perf_counter() - start)
    best = {k: round(min(v), 3) for k, v in times.items()}
    print(f"{len(lattices)} lattices, {sum(lat.num_arcs for lat in lattices)} arcs, {len(points)} points, "
          f"same paths; grid pass seconds (best of 3): {best}, speed-up {best['session23'] / best['session24']:.2f}x")


if __name__ == "__main__":
    main()
