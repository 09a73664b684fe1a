import kaldi_hmm_gmm  # noqa
import logging, os, sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from tests.fixtures_gmm import linked_tri1_workspace
from weakalign.pipeline.workspace import Workspace
from weakalign.pipeline.stage import run_stage
from weakalign.kaldi_steps.train_lda_mllt import tri2_stage
from weakalign.kaldi_steps.train_sat import tri3_stage
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
src = Workspace("an4", "/work/demo/data", "/work/demo/exp")
root = Path("/work/s10gmm/ws")
ws = Workspace("an4", root / "data", root / "exp")
if not ws.exp.exists():
    ws = linked_tri1_workspace(src, root)
run_stage("tri2", ws, tri2_stage, nj=1)
run_stage("tri3", ws, tri3_stage, nj=1)
