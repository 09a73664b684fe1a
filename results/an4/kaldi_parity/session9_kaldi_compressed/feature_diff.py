"""How far the project's MFCCs are from real Kaldi's stored ones (../shared/fixtures/kaldi_an4_reference
feats/train/feats.ark, written by compute-mfcc-feats | copy-feats --compress=true), on the first 40
train utterances: kaldi-native-fbank's values as computed, and after Kaldi's compression (kaldiio).
Run from the repository: .venv/bin/python results/an4/kaldi_parity/session9_kaldi_compressed/feature_diff.py DATA_ROOT"""
import io
import sys
from pathlib import Path

import kaldi_hmm_gmm  # noqa: F401
import kaldiio
import numpy as np
from lhotse import CutSet

from weakalign.pipeline.acoustic_features import KnfMfcc

FIXTURE = Path(__file__).resolve().parents[5] / "shared" / "fixtures" / "kaldi_an4_reference"
ref = dict(kaldiio.load_ark(str(FIXTURE / "feats" / "train" / "feats.ark")))
cuts = CutSet.from_file(Path(sys.argv[1]) / "an4" / "mfcc" / "an4_cuts_train.jsonl.gz")
ext = KnfMfcc()


def compressed(x):
    buf = io.BytesIO()
    kaldiio.save_ark(buf, {"u": x.astype(np.float32)}, compression_method=1)
    buf.seek(0)
    return dict(kaldiio.load_ark(buf))["u"]


raw_d, comp_d, close, total = [], [], 0, 0
for cut in list(cuts)[:40]:
    kf = ref[next(k for k in ref if k.endswith(cut.id))]
    raw = ext.extract(cut.load_audio(), cut.sampling_rate)
    m = min(len(kf), len(raw))
    raw_d.append(np.abs(raw[:m] - kf[:m]).mean())
    d = np.abs(compressed(raw)[:m] - kf[:m])
    comp_d.append(d.mean())
    close += int((d < 1e-3).sum())
    total += d.size
print(f"utterances 40; mean |ours - Kaldi's stored|: as computed {np.mean(raw_d):.4f}, "
      f"after Kaldi's compression {np.mean(comp_d):.2e} ({100 * close / total:.1f}% of values within 1e-3)")
