"""CSI: SAMamba: Adaptive State Space Modeling with Hierarchical Vision for Infrared Small Target Detection (channel-split interaction). Information Fusion 2025. https://arxiv.org/abs/2505.23214

1x1 conv-BN-ReLU to c2; LayerNorm, then the channels split in four groups, each through one shared
Mamba (1-D selective scan over the row-major tokens) + LayerNorm + MLP with a learned skip; the four
groups are interleaved channel by channel and fused by a 1x1 conv-BN-ReLU (SAMamba's MAMBACR);
then ECA, a 7x7 spatial gate on the channel mean and max, dropout, and a 1x1 conv-BN-ReLU of the sum
with the projected input. c1 -> c2 channels. Pure-PyTorch scan on CPU (mamba_ssm's kernel on CUDA
when installed).
Compared with the authors' code (zhengshuchen/SAMamba basicseg/main_blocks.py, CSI with mamba_ssm's
Mamba run through this zoo's reference scan): max abs diff 3e-8 on (2, 32, 8, 8), random weights. (The DEIM
plug-in project's CSI file holds only the MAMBACR part.)"""
import torch
from torch import nn

from blocks.attention.eca import ECA
from blocks.conv.conv import Conv
from blocks.mamba._mamba import Mamba
from blocks.registry import ChannelError, register

GROUPS = 4


@register("mamba", channels="arg0", example={"args": [32], "kwargs": {"d_state": 4}, "shape": (2, 32, 8, 8)})
class CSI(nn.Module):
    def __init__(self, c1: int, c2: int, d_state: int = 16, d_conv: int = 4, expand: float = 2, drop: float = 0.3):
        """c2: output channels, a multiple of 4 (the Mamba runs on quarters); d_state, d_conv, expand: the
        Mamba's (mamba_ssm defaults); drop: Dropout2d before the fusion (SAMamba: 0.3)."""
        super().__init__()
        if c2 % GROUPS:
            raise ChannelError(f"CSI splits its {c2} output channels in {GROUPS}; use a multiple of {GROUPS}")
        q = c2 // GROUPS
        self.skip = Conv(c1, c2, 1, act="relu", bias=True)
        self.norm = nn.LayerNorm(c2)
        self.mamba = Mamba(q, d_state, d_conv, expand)
        self.norm1 = nn.LayerNorm(q)
        self.mlp = nn.Sequential(nn.Linear(q, 4 * q), nn.GELU(), nn.Linear(4 * q, q))
        self.skip_scale = nn.Parameter(torch.ones(1))
        self.out = Conv(c2, c2, 1, act="relu", bias=True)
        self.eca = ECA(c2)
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.drop = nn.Dropout2d(drop)
        self.final_conv = Conv(c2, c2, 1, act="relu", bias=True)

    def _mamba_cr(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        groups = [self.mlp(self.norm1(self.mamba(t))) + self.skip_scale * t for t in tokens.chunk(GROUPS, -1)]
        # interleave: output channel 4 * i + g is channel i of group g
        mixed = torch.stack(groups, -1).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
        return self.out(mixed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(x)
        y = self.eca(self._mamba_cr(skip))
        y = y * torch.sigmoid(self.spatial(torch.cat((y.mean(1, keepdim=True), y.amax(1, keepdim=True)), 1)))
        return self.final_conv(skip + self.drop(y))
