import torch, sys, time
from lhotse import load_manifest
from weakalign.e2e.config import load_config
from weakalign.e2e.data import AsrDataset
from weakalign.e2e.build import build_model
from weakalign.e2e.init import initialize
from weakalign.e2e.tokenizer import Tokenizer
from weakalign.e2e.train import make_optimizer, train_step
torch.set_num_threads(1)
cuts = load_manifest('data/an4/fbank/an4_cuts_train.jsonl.gz')
tok = Tokenizer('exp_tune/an4/e2e/R5/bpe.model')
batch = AsrDataset(tok)[cuts.subset(first=300).filter(lambda c: c.duration > 2.0).subset(first=8)]
print([len(t) for t in batch['tokens']], batch['feat_lens'].tolist())
over = dict(x.split('=') for x in sys.argv[1:])
over = {k: eval(v) for k, v in over.items()}
torch.manual_seed(0)
cfg = load_config('baseline', 'an4', {'enc_residual': False, 'specaug': False, 'ctc_weight': 1.0, 'enc_dropout': 0.0, 'lr': 1e-3, 'warmup_steps': 1, **over})
m = build_model(cfg, tok.vocab_size); initialize(m, cfg.get('init', 'lecun')); m.cmvn.load_stats('data/an4/fbank/global_cmvn.json')
opt, sch = make_optimizer(m, cfg)
t=time.time()
for i in range(150):
    st = train_step(m, batch, opt, sch, 5.0)
    if i % 15 == 0: print(i, round(st['loss_ctc'], 3), round(st['grad_norm'], 1), round(time.time()-t))
