import torch, math
from torch import nn
from weakalign.e2e.build import build_model
from weakalign.e2e.model import DEFAULT_MODEL_CONFIG
def lecun(m):
    for n,p in m.named_parameters():
        if n.startswith('cmvn'): continue
        if p.dim()==1: p.data.zero_()
        elif p.dim()==2: p.data.normal_(0, 1/math.sqrt(p.shape[1]))
        elif p.dim()==4: p.data.normal_(0, 1/math.sqrt(p[0].numel()))
    for mod in m.modules():
        if isinstance(mod, nn.LSTM):
            for n,p in mod.named_parameters():
                if n.startswith('bias_ih'):
                    H=p.shape[0]//4; p.data[H:2*H]=1.0
for name, init in [('default', None), ('lecun', lecun)]:
    torch.manual_seed(0)
    cfg = dict(DEFAULT_MODEL_CONFIG, enc_proj=128, enc_residual=False, ctc_weight=0.5)
    m = build_model(cfg, 40); m.eval()
    if init: init(m)
    x = torch.randn(4, 300, 80)
    enc = m.encode(x, torch.tensor([300]*4))
    # input sensitivity: correlation of layer output change with input change
    x2 = x.clone(); x2[:, 150:160] = torch.randn(4,10,80)
    enc2 = m.encode(x2, torch.tensor([300]*4))
    print(name, [round(l.std().item(),3) for l in enc.layers], 'delta6', round((enc.out-enc2.out).abs().mean().item()/enc.out.abs().mean().item(),3))
