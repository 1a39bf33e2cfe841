"""ASSM: MambaIRv2: Attentive State Space Restoration (attentive state-space module). CVPR 2025. https://arxiv.org/abs/2411.15269

A router assigns every pixel one of num_tokens learned prompt classes; pixels are sorted by class so
that one 1-D selective scan visits semantically similar pixels together (semantic-guided
neighbouring), with each pixel's prompt (a low-rank learned embedding) added to the scan's output
matrix C; the result is unsorted back. Input: 1x1 conv to mlp_ratio * c, gated by a 3x3 depth-wise
positional conv; LayerNorm and a linear projection at the end. Keeps channels. Pure-PyTorch scan on
CPU (mamba_ssm's kernel on CUDA when installed).
The route samples hard Gumbel-softmax classes in training, as released; in eval mode it takes the
noise-free argmax (the released code samples noise at test time too, so its outputs vary run to run).
The prompt embedding that MambaIRv2 shares with its window attention lives inside the block here.
Compared with the authors' code (csguoh/MambaIR basicsr/archs/mambairv2_arch.py, ASSM with its
Selective_Scan run through mamba_ssm's selective_scan_ref, train mode, same Gumbel draw): max abs diff
5e-7 on (2, 32, 8, 8), outputs up to 2.2."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.mamba._mamba import a_log_init, dt_proj
from blocks.mamba._scan import selective_scan
from blocks.registry import ChannelError, register


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4, "num_tokens": 8, "inner_rank": 16},
                                             "shape": (2, 32, 8, 8)})
class ASSM(nn.Module):
    def __init__(self, c: int, d_state: int = 16, num_tokens: int = 64, inner_rank: int = 128, mlp_ratio: float = 2.0):
        """c: at least 3 (the router is c / 3 wide); num_tokens: prompt classes; inner_rank: rank of the
        prompt embedding; mlp_ratio: scan width / c (MambaIRv2: 16 state, 64 classes, rank 128, ratio 2)."""
        super().__init__()
        if c < 3:
            raise ChannelError(f"ASSM's router is channels / 3 wide; {c} channels is too few")
        hidden = int(c * mlp_ratio)
        self.d_state, self.dt_rank = d_state, math.ceil(hidden / 16)
        self.in_proj = nn.Conv2d(c, hidden, 1)
        self.CPE = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.route = nn.Sequential(nn.Linear(c, c // 3), nn.GELU(), nn.Linear(c // 3, num_tokens), nn.LogSoftmax(-1))
        self.embeddingB = nn.Embedding(num_tokens, inner_rank)
        nn.init.uniform_(self.embeddingB.weight, -1 / num_tokens, 1 / num_tokens)
        self.embeddingA = nn.Embedding(inner_rank, d_state)
        nn.init.uniform_(self.embeddingA.weight, -1 / inner_rank, 1 / inner_rank)
        self.x_proj = nn.Linear(hidden, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = dt_proj(self.dt_rank, hidden)
        self.A_log = nn.Parameter(a_log_init(hidden, d_state))
        self.D = nn.Parameter(torch.ones(hidden))
        self.out_norm = nn.LayerNorm(hidden)
        self.out_proj = nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        logits = self.route(x.flatten(2).transpose(1, 2))                            # (B, HW, classes)
        if self.training:
            policy = F.gumbel_softmax(logits, hard=True, dim=-1)
        else:
            policy = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        prompt = policy @ (self.embeddingB.weight @ self.embeddingA.weight)           # (B, HW, d_state)
        order = torch.sort(policy.detach().argmax(-1), dim=-1, stable=False).indices
        inverse = torch.argsort(order, dim=-1)
        feats = self.in_proj(x)
        feats = (feats * torch.sigmoid(self.CPE(feats))).flatten(2).transpose(1, 2)  # (B, HW, hidden)
        feats = feats.gather(1, order[..., None].expand_as(feats))
        dt, B, C = self.x_proj(feats).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
        # the prompts stay in pixel order while the scan runs in class order, as MambaIRv2 does
        y = selective_scan(feats.transpose(1, 2).float(), dt.float(), -torch.exp(self.A_log.float()),
                           B.transpose(1, 2)[:, None].float(), (C + prompt).transpose(1, 2)[:, None].float(),
                           self.D.float(), self.dt_proj.bias.float())
        y = self.out_proj(self.out_norm(y.transpose(1, 2).to(x.dtype)))
        y = y.gather(1, inverse[..., None].expand_as(y))
        return y.transpose(1, 2).reshape(b, c, h, w)
