"""RCB: OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels. CVPR 2025. https://arxiv.org/abs/2502.20087

OverLoCK's RepConvBlock: a residual depth-wise 3x3 conv, then LayerNorm, a Dilated Reparam Block
(a large depth-wise kernel with parallel dilated branches, OverLoCK's branch table) + BN, SE (GELU),
a 1x1 expansion with GELU, a residual depth-wise 3x3 conv, GRN and a 1x1 projection, added to the
input (optionally through a layer scale). `fuse()` merges the dilated branches and the BN into one large kernel and folds the GRN
bias into the last 1x1 conv. Keeps channels.
Compared with the authors' code (LMMMEng/OverLoCK models/overlock.py RepConvBlock): max abs diff 2e-6
on (2, 32, 16, 16), with and without a layer scale, trained and reparameterised forms alike."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.backbone._grn import GRN
from blocks.common import fuse_conv_bn
from blocks.conv.dilated_reparam_conv import DilatedReparamConv
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


# OverLoCK's branch table (kernel sizes, dilation rates): UniRepLKNet's plus undilated mid-size kernels
OVERLOCK_BRANCHES = {
    19: ((5, 7, 9, 9, 3, 3, 3), (1, 1, 1, 2, 4, 5, 7)),
    17: ((5, 7, 9, 3, 3, 3), (1, 1, 2, 4, 5, 7)),
    15: ((5, 7, 7, 3, 3, 3), (1, 1, 2, 3, 5, 7)),
    13: ((5, 7, 7, 3, 3, 3), (1, 1, 2, 3, 4, 5)),
    11: ((5, 7, 5, 3, 3, 3), (1, 1, 2, 3, 4, 5)),
    9: ((5, 7, 5, 3, 3), (1, 1, 2, 3, 4)),
    7: ((5, 3, 3, 3), (1, 1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


class OverLoCKDilatedReparam(DilatedReparamConv):
    """The Dilated Reparam Block with OverLoCK's branches; forward and fuse() are DilatedReparamConv's."""

    def __init__(self, c: int, k: int):
        nn.Module.__init__(self)
        if k not in OVERLOCK_BRANCHES:
            raise ArgumentError(f"RCB supports kernel sizes {sorted(OVERLOCK_BRANCHES)}, got {k}")
        sizes, self.rates = OVERLOCK_BRANCHES[k]
        self.large = nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False)
        self.large_bn = nn.BatchNorm2d(c)
        self.dilated = nn.ModuleList(nn.Conv2d(c, c, size, 1, rate * (size - 1) // 2, rate, groups=c, bias=False)
                                     for size, rate in zip(sizes, self.rates))
        self.dilated_bn = nn.ModuleList(nn.BatchNorm2d(c) for _ in sizes)
        self.reparam = None


class ResDWConv(nn.Conv2d):
    """x + depth-wise k x k conv(x)."""

    def __init__(self, c: int, k: int = 3):
        super().__init__(c, c, k, padding=k // 2, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


@register("backbone", channels="same", example={"args": [7], "shape": (2, 32, 16, 16)})
class RCB(nn.Module):
    def __init__(self, c: int, k: int = 7, mlp_ratio: float = 4.0, ls_init_value: float | None = None,
                 res_scale: bool = False):
        """c: channels; k: the Dilated Reparam kernel (5-19; OverLoCK uses 17, 15, 13, 7 by stage);
        mlp_ratio: expansion / c; ls_init_value: per-channel layer scale (None = off; with res_scale it
        scales the shortcut instead of the branch)."""
        super().__init__()
        self.res_scale = res_scale
        hidden = int(c * mlp_ratio)
        self.dwconv = ResDWConv(c, 3)
        self.norm = LayerNorm2d(c, eps=1e-6)
        self.large = OverLoCKDilatedReparam(c, k)
        self.large_bn = nn.BatchNorm2d(c)
        se_hidden = max(16, c // 8)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, se_hidden, 1), nn.GELU(), nn.Conv2d(se_hidden, c, 1), nn.Sigmoid())
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.act = nn.GELU()
        self.mlp_dwconv = ResDWConv(hidden, 3)
        self.grn = GRN(hidden)
        self.fc2 = nn.Conv2d(hidden, c, 1)
        if ls_init_value is not None:
            self.ls_weight = nn.Parameter(torch.full((c, 1, 1), float(ls_init_value)))
            self.ls_bias = nn.Parameter(torch.zeros(c, 1, 1))
        else:
            self.ls_weight = self.ls_bias = None

    def _layer_scale(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.ls_weight is None else x * self.ls_weight + self.ls_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(x)
        y = self.large_bn(self.large(self.norm(x)))
        y = self.fc2(self.grn(self.mlp_dwconv(self.act(self.fc1(y * self.se(y))))))
        return self._layer_scale(x) + y if self.res_scale else x + self._layer_scale(y)

    @torch.no_grad()
    def fuse(self):
        if isinstance(self.large_bn, nn.BatchNorm2d):
            conv = self.large.reparam if isinstance(self.large, DilatedReparamConv) else self.large
            self.large, self.large_bn = fuse_conv_bn(conv, self.large_bn), nn.Identity()
        if self.grn.beta is not None:  # fc2(g + beta) = fc2(g) + W beta
            self.fc2.bias.add_(self.fc2.weight.flatten(1) @ self.grn.beta.flatten())
            self.grn.beta = None
