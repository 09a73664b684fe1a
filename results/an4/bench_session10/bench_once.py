import json
import kaldi_hmm_gmm
from weakalign.pipeline.workspace import Workspace
from weakalign.kaldi_steps.benchmarks import bench_gmm_align_dask
ws = Workspace("an4", "/work/demo/data", "/work/demo/exp")
for _ in range(1):
    print(json.dumps(bench_gmm_align_dask(ws, 2)))
