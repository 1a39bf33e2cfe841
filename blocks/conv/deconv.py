import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation
from blocks.conv._reparam import fold_bn, merged_conv
from blocks.registry import register

# the 3x3 taps in row-major order, each replaced by its clockwise neighbour on the ring (the centre stays)
_CLOCKWISE = [3, 0, 1, 6, 4, 2, 7, 8, 5]


@register("conv", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class DEConv(nn.Module):
    """DEConv: DEA-Net: Single Image Dehazing Based on Detail-Enhanced Convolution and Content-Guided Attention. IEEE TIP 2024. https://arxiv.org/abs/2301.04805

    Detail-enhanced convolution: a vanilla 3x3 conv beside central, horizontal, vertical and angular
    difference convs, all summed into one 3x3 kernel, then BN and the activation; keeps channels.
    `fuse()` stores that kernel with BN folded in as one conv.
    Compared with the authors' code (cecret3350/DEA-Net code/model/modules/deconv.py): summed kernel
    and output (BN set to identity plus their summed bias) max abs diff 0 on (2, 16, 16, 16).
    """

    def __init__(self, c: int, act="silu"):
        """c: channels (kept). act: activation after BN; the paper's DEConv is the bare conv, the BN
        and activation make it a drop-in for a Conv row as in the plug-in project."""
        super().__init__()
        shape2d, shape1d = (c, c, 3, 3), (c, c, 3)
        self.central = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(shape2d), a=5 ** 0.5))
        self.horizontal = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(shape1d), a=5 ** 0.5))
        self.vertical = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(shape1d), a=5 ** 0.5))
        self.angular = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(shape2d), a=5 ** 0.5))
        self.vanilla = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(shape2d), a=5 ** 0.5))
        # the five branch biases of the paper add up to one bias, which the BN below absorbs
        self.norm = nn.BatchNorm2d(c)
        self.act = activation(act)
        self.reparam = None

    def kernel(self) -> torch.Tensor:
        """The one 3x3 kernel the five branches sum to (theta = 1 for the difference convs)."""
        central = self.central.clone()
        central[..., 1, 1] = central[..., 1, 1] - self.central.sum((2, 3))
        zeros = torch.zeros_like(self.horizontal)
        # left column minus right column; top row minus bottom row
        horizontal = torch.stack((self.horizontal, zeros, -self.horizontal), dim=-1)
        vertical = torch.stack((self.vertical, zeros, -self.vertical), dim=-2)
        flat = self.angular.flatten(2)
        angular = (flat - flat[..., _CLOCKWISE]).reshape_as(self.angular)
        return central + horizontal + vertical + angular + self.vanilla

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.act(self.reparam(x))
        return self.act(self.norm(F.conv2d(x, self.kernel(), padding=1)))

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        kernel, bias = fold_bn(self.kernel(), self.norm)
        self.reparam = merged_conv(nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1), kernel, bias)
        del self.central, self.horizontal, self.vertical, self.angular, self.vanilla, self.norm
