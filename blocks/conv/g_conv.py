import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation
from blocks.registry import register


def _fold_norm_into_pointwise(norm: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 conv equal to conv(norm(x)) in eval mode (a 1x1 conv has no padding, so this is exact)."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    weight = conv.weight[:, :, 0, 0]
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1).to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_((weight * scale).reshape_as(conv.weight))
    fused.bias.copy_(weight @ shift + conv.bias)
    return fused


@register("conv", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class gConv(nn.Module):
    """gConv: Rethinking Performance Gains in Image Dehazing Networks (gUNet). arXiv 2022. https://arxiv.org/abs/2209.11448

    The gated conv block of gUNet: BN, then a value path (1x1 conv, depth-wise k x k conv with reflect
    padding) multiplied by a sigmoid gate (1x1 conv), a 1x1 projection and a residual; keeps channels.
    `fuse()` folds the BN into both 1x1 convs. Maps no larger than k // 2 pixels (where reflect
    padding is undefined) are padded by replication instead.
    Compared with the authors' code (IDKiro/gUNet models/gunet.py BasicBlock + ConvLayer): max abs
    diff 0 on (2, 16, 16, 16) in eval mode.
    """

    def __init__(self, c: int, k: int = 5, gate_act="sigmoid"):
        """c: channels (kept). k: depth-wise kernel of the value path (5 in every gUNet variant).
        gate_act: activation of the gate path."""
        super().__init__()
        self.norm = nn.BatchNorm2d(c)
        self.value = nn.Sequential(nn.Conv2d(c, c, 1), nn.Conv2d(c, c, k, groups=c))
        self.gate = nn.Sequential(nn.Conv2d(c, c, 1), activation(gate_act))
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        pad = self.value[1].kernel_size[0] // 2
        # reflect padding (gUNet's) needs a map wider than the pad; smaller maps replicate the border
        mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
        value = self.value[1](F.pad(self.value[0](y), [pad] * 4, mode=mode))
        return x + self.proj(value * self.gate(y))

    @torch.no_grad()
    def fuse(self):
        if isinstance(self.norm, nn.Identity):
            return
        self.value[0] = _fold_norm_into_pointwise(self.norm, self.value[0])
        self.gate[0] = _fold_norm_into_pointwise(self.norm, self.gate[0])
        self.norm = nn.Identity()
