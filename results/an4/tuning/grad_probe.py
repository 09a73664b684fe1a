import torch, sys
from lhotse import load_manifest
from weakalign.e2e.config import load_config
from weakalign.e2e.data import AsrDataset
from weakalign.e2e.build import build_model
from weakalign.e2e.init import initialize
from weakalign.e2e.tokenizer import Tokenizer
torch.set_num_threads(1)
cuts = load_manifest('data/an4/fbank/an4_cuts_train.jsonl.gz')
tok = Tokenizer('exp_tune/an4/e2e/R5/bpe.model')
batch = AsrDataset(tok)[cuts.subset(first=8)]
for init in ['pytorch','lecun']:
  for resid in [False, True]:
    torch.manual_seed(0)
    cfg = load_config('baseline', 'an4', {'enc_residual': resid, 'specaug': False, 'ctc_weight': 1.0, 'enc_dropout': 0.0})
    m = build_model(cfg, tok.vocab_size); initialize(m, init); m.cmvn.load_stats('data/an4/fbank/global_cmvn.json')
    loss, st = m(batch); loss.backward()
    g = [sum(p.grad.norm()**2 for p in l.parameters()).sqrt().item() for l in m.encoder.layers]
    gs = sum(p.grad.norm()**2 for p in m.encoder.subsampling.parameters()).sqrt().item()
    print(init, 'resid' if resid else 'plain', 'sub %.2e' % gs, ' '.join('%.2e' % x for x in g), 'head %.2e' % m.ctc_head.weight.grad.norm().item())
