"""FATBlock: Lightweight Vision Transformer with Bidirectional Interaction. NeurIPS 2023. https://arxiv.org/abs/2306.00396

The Fully Adaptive Transformer block (the DEIM plug-in list tags it ICLR 2024; the authors cite
NeurIPS 2023): a depth-wise conv positional encoding, then fully adaptive self-attention (FASA:
queries at full resolution attend to keys and values from a map downsampled by window_size with
stride-2 depth-wise conv-BN steps; a depth-wise conv on the queries gives self-modulated local
features; local and global features gate each other and are multiplied and mixed by a 1x1 conv),
then a conv FFN (1x1, GELU, depth-wise conv with residual, BN, 1x1); GroupNorm(1) before both, with
residuals. Keeps channels (the stride-1 block).
Compared with the authors' code (qhfan/FAT classification/models.py FATBlock, SyncBatchNorm as
BatchNorm2d): max abs diff 5e-7 on (2, 32, 16, 16) and (2, 32, 13, 19)."""
import math

import torch
from torch import nn

from core.errors import ArgumentError
from blocks.registry import ChannelError, register


def _refined_downsample(c: int, window_size: int, k: int = 5) -> nn.Module:
    """log2(window_size) stride-2 depth-wise conv-BN steps, a 1x1 conv between consecutive steps."""
    steps = int(math.log2(window_size))
    layers = []
    for step in range(steps):
        layers += [nn.Conv2d(c, c, k, 2, k // 2, groups=c), nn.BatchNorm2d(c)]
        if step != steps - 1:
            layers.append(nn.Conv2d(c, c, 1))
    return nn.Sequential(*layers) if layers else nn.Identity()


class FASA(nn.Module):
    """Fully adaptive self-attention: down-sampled global attention and self-modulated local conv, crossed."""

    def __init__(self, c: int, kernel_size: int, num_heads: int, window_size: int):
        super().__init__()
        self.q = nn.Conv2d(c, c, 1)
        self.kv = nn.Conv2d(c, 2 * c, 1)
        self.local_mixer = nn.Conv2d(c, c, kernel_size, 1, kernel_size // 2, groups=c)
        self.mixer = nn.Conv2d(c, c, 1)
        self.dim_head = c // num_heads
        self.pool = _refined_downsample(c, window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, c, height, width = x.shape
        q_local = self.q(x)
        q = q_local.reshape(batch, -1, self.dim_head, height * width).transpose(-1, -2)
        kv = self.kv(self.pool(x))
        k, v = kv.reshape(batch, 2, -1, self.dim_head, kv.shape[2] * kv.shape[3]).permute(1, 0, 2, 4, 3)
        attn = torch.softmax(self.dim_head ** -0.5 * torch.matmul(q, k.transpose(-1, -2)), -1)
        global_feat = torch.matmul(attn, v).transpose(-1, -2).reshape(batch, c, height, width)
        local_feat = self.local_mixer(q_local)
        local_feat = local_feat * torch.sigmoid(local_feat)  # self-modulated local features
        local_feat = local_feat * torch.sigmoid(global_feat)  # global -> local
        return self.mixer(local_feat * global_feat)


@register("transformer", channels="same", example={"kwargs": {"window_size": 4}, "shape": (2, 32, 16, 16)})
class FATBlock(nn.Module):
    def __init__(self, c: int, kernel_size: int = 7, num_heads: int = 4, window_size: int = 2,
                 mlp_kernel_size: int = 5, mlp_ratio: float = 4.0):
        """c: channels; kernel_size: depth-wise kernel of the positional encoding and local mixer;
        num_heads: must divide c; window_size: key/value downsampling (1, 2, 4 or 8); mlp_kernel_size:
        FFN depth-wise kernel; mlp_ratio: FFN width / c. Defaults: FAT-B0's stride-16 stage (kernel 7,
        window 2) with 16-channel heads at c = 64."""
        super().__init__()
        if c % num_heads:
            raise ChannelError(f"FATBlock: channels {c} are not divisible by num_heads={num_heads}")
        if window_size not in (1, 2, 4, 8):
            raise ArgumentError(f"FATBlock: window_size must be 1, 2, 4 or 8, got {window_size}")
        self.cpe = nn.Conv2d(c, c, kernel_size, 1, kernel_size // 2, groups=c)
        self.norm1 = nn.GroupNorm(1, c)
        self.attn = FASA(c, kernel_size, num_heads, window_size)
        self.norm2 = nn.GroupNorm(1, c)
        hidden = int(c * mlp_ratio)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden, hidden, mlp_kernel_size, 1, mlp_kernel_size // 2, groups=hidden)
        self.bn = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe(x)
        x = x + self.attn(self.norm1(x))
        y = self.act(self.fc1(self.norm2(x)))
        return x + self.fc2(self.bn(y + self.dwconv(y)))
