"""mono and tri1 on speechocean762 with the WER check scored on one decode to lattices and on six
n-best decodes, side by side (issue #17 item 2): the stage times and the checks' results, from the
two exp roots' done-markers, diagnostics.json and stage logs.

    python collect.py CORPUS EXP_LATTICE EXP_NBEST OUT.json

Both exp roots start from one copy of the same prepare/features/lang; each ran
``weakalign align CORPUS --nj 1 --from mono --stop-after tri1 --<stage>-decode-scoring kaldi-<method>``
with OMP_NUM_THREADS=1 (speechocean762: the two at once on the 2-core machine; AN4: one after the
other, in both orders, beside another 1-thread job).
"""
import json
import platform
import re
import sys
from datetime import datetime
from pathlib import Path


def check_seconds(log: Path) -> float:
    """From the stage log's last run: the start of the dev grid decode to the stage's end."""
    lines = log.read_text(errors="replace").splitlines()
    last_start = max(i for i, line in enumerate(lines) if re.search(r"stage \w+: start", line))
    start = end = None
    for line in lines[last_start:]:
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) INFO (.*)", line)
        if m and m.group(2).startswith("grid scoring: dev decoded"):
            start = m.group(1)
        if m and re.search(r"stage \w+: done in", m.group(2)):
            end = m.group(1)
    fmt = "%Y-%m-%d %H:%M:%S,%f"
    return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()


def stage(exp: Path, name: str) -> dict:
    marker = json.loads((exp / "done" / f"{name}.json").read_text())
    details = json.loads((exp / name / "diagnostics.json").read_text())["wer_details"]
    return {"seconds": marker["seconds"], "decode_scoring": marker["options"]["decode_scoring"],
            "check_seconds": check_seconds(exp / "log" / f"{name}.log"), "wer_set": marker["summary"]["wer_set"],
            "wer": details["wer"], "errors": details["errors"], "words": details["words"],
            "point": [details["lm_weight"], details["penalty"]], "at_grid_edge": details["at_grid_edge"],
            "grid": details["grid"], "dev_wer": details["dev_wer"]}


def main(corpus: str, lattice: str, nbest: str, out: str) -> None:
    report = {"corpus": corpus, "exp_roots": {"lattice": lattice, "nbest": nbest},
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    for name in ("mono", "tri1"):
        a, b = stage(Path(lattice) / corpus, name), stage(Path(nbest) / corpus, name)
        report[name] = {"lattice": a, "nbest": b,
                        "stage_time_ratio": round(a["seconds"] / b["seconds"], 3),
                        "check_time_ratio": round(a["check_seconds"] / b["check_seconds"], 3),
                        "dev_cells_differing": sum(a["dev_wer"][k] != b["dev_wer"][k] for k in a["dev_wer"]),
                        "max_dev_wer_difference": round(max(abs(a["dev_wer"][k] - b["dev_wer"][k])
                                                            for k in a["dev_wer"]), 2)}
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
