"""GLVSS: A Lightweight Semantic Segmentation Network Based on Self-Attention Mechanism and State Space Model for Efficient Urban Scene Segmentation (global-local visual state space block). TGRS 2025. https://ieeexplore.ieee.org/document/10969832

Conformity (row- and column-wise information-integration attention, 1x1 conv-BN-ReLU6), then two
branches: global, the channels in four groups each through one shared Mamba layer (LN, 1-D selective
scan over row-major tokens, residual, LN); local, a depth-wise-separable/1x1 stem and three chained
residual bottlenecks with dilations 1, 2, 3, fused and re-weighted by channel attention. A cosine-
similarity-gated embedding fuses the two, plus the global branch. Keeps channels. Pure-PyTorch scan
on CPU (mamba_ssm's kernel on CUDA when installed).
Not compared: no code from the authors was found; built from the paper and the DEIM plug-in
project's GLVSS file (its depth-wise-separable conv taken as depth-wise 3x3 + 1x1 + BN + SiLU, the
Ultralytics DSConv it imports)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv.conv import Conv
from blocks.mamba._mamba import Mamba
from blocks.registry import ChannelError, register

GROUPS = 4


class _DSConv(nn.Module):
    """Depth-wise k x k (dilation d) then 1x1, BN, SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 3, d: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(c1, c1, k, padding=d * (k - 1) // 2, dilation=d, groups=c1, bias=False)
        self.pw = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.pw(self.dw(x))))


class _AxisAttention(nn.Module):
    """Weights a (B, A, C, L) stack along L from the max and mean over A (1x1 conv, then a depth-wise
    k-tap conv1d over L per channel, BN, sigmoid)."""

    def __init__(self, c: int, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 1)
        self.conv2 = nn.Conv1d(c, c, kernel_size, padding=kernel_size // 2, groups=c, bias=False)
        self.bn = nn.BatchNorm1d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c, length = x.shape
        pooled = torch.stack((x.amax(1), x.mean(1)), 1)                       # (B, 2, C, L)
        weight = torch.sigmoid(self.bn(self.conv2(self.conv1(pooled).view(b, c, length))))
        return x * weight.view(b, 1, c, length)


class _Conformity(nn.Module):
    """x + attention along H + attention along W (one shared weighting), then 1x1 conv-BN-ReLU6."""

    def __init__(self, c: int):
        super().__init__()
        self.attention = _AxisAttention(c)
        self.conv = Conv(c, c, 1, act="relu6", bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        along_h = self.attention(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        along_w = self.attention(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        return self.conv(x + along_h + along_w)


class _Bottleneck(nn.Module):
    """1x1 conv-BN-ReLU, depth-wise-separable 3x3 (dilation d), 1x1 conv-BN, + input, ReLU."""

    def __init__(self, c: int, d: int):
        super().__init__()
        self.stage = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), _DSConv(c, c, 3, d),
                                   nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.stage(x) + x)


class _LocalFeature(nn.Module):
    def __init__(self, c: int, ratio: int = 16):
        super().__init__()
        if c < ratio:
            raise ChannelError(f"GLVSS's channel attention squeezes by {ratio}; {c} channels is too few")
        self.branch1_1 = Conv(c, c, 1, act="silu", bias=True)
        self.branch1_2 = _DSConv(c, c)
        self.chain = nn.ModuleList(_Bottleneck(c, d) for d in (1, 2, 3))
        self.conv = nn.Conv2d(3 * c, c, 1)
        self.fc1 = nn.Conv2d(c, c // ratio, 1, bias=False)
        self.fc2 = nn.Conv2d(c // ratio, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.branch1_1(x) + self.branch1_2(x)
        outs, y = [], stem
        for block in self.chain:
            y = block(y)
            outs.append(y)
        out = self.conv(torch.cat(outs, 1))
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(out, 1))))
        peak = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(out, 1))))
        return out * torch.sigmoid(avg + peak) + stem


class _FeatureEmbedding(nn.Module):
    """s = DSConv(g + l); s * sigmoid(cos(g, l)) through a second DSConv, plus s."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = _DSConv(c, c), _DSConv(c, c)

    def forward(self, glob: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        s = self.conv1(glob + local)
        sim = torch.sigmoid(F.cosine_similarity(glob, local, dim=1, eps=1e-8)).unsqueeze(1)
        return self.conv2(s * sim) + s


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4}, "shape": (2, 32, 8, 8)})
class GLVSS(nn.Module):
    def __init__(self, c: int, d_state: int = 16, d_conv: int = 4, expand: float = 2):
        """c: a multiple of 4, at least 16; d_state, d_conv, expand: the Mamba's (mamba_ssm defaults)."""
        super().__init__()
        if c % GROUPS:
            raise ChannelError(f"GLVSS splits {c} channels in {GROUPS}; use a multiple of {GROUPS}")
        q = c // GROUPS
        self.conformity = _Conformity(c)
        self.local = _LocalFeature(c)
        self.norm = nn.LayerNorm(q)
        self.mamba = Mamba(q, d_state, d_conv, expand)
        self.norm_f = nn.LayerNorm(q)
        self.embedding = _FeatureEmbedding(c)

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        groups = []
        for t in x.flatten(2).transpose(1, 2).chunk(GROUPS, -1):
            groups.append(self.norm_f(t + self.mamba(self.norm(t))))
        return torch.cat(groups, -1).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conformity(x)
        glob = self._global(x)
        return self.embedding(glob, self.local(x)) + glob
