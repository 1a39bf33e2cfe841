import torch
from torch import nn

from core.errors import ArgumentError
from blocks.common import activation
from blocks.conv._reparam import fold_bn
from blocks.registry import register

# kernel shapes of the parallel branches for each MBRConv size (MobileIE's MBRConv1 / 3 / 5)
BRANCHES = {
    1: ((1, 1),),
    3: ((3, 3), (1, 1), (3, 1), (1, 3)),
    5: ((5, 5), (1, 1), (3, 3), (3, 1), (1, 3)),
}


def _centred(kernel: torch.Tensor, k: int) -> torch.Tensor:
    rows, cols = (k - kernel.shape[-2]) // 2, (k - kernel.shape[-1]) // 2
    return nn.functional.pad(kernel, [cols, cols, rows, rows])


@register("conv", channels="arg0", example={"args": [32, 3], "shape": (2, 16, 16, 16)})
class MBRConv(nn.Module):
    """MBRConv: MobileIE: An Extremely Lightweight and Effective ConvNet for Real-Time Image Enhancement on Mobile Devices. ICCV 2025. https://arxiv.org/abs/2507.01838

    Multi-branch re-parameterisable conv: k x k, 1 x 1 and (for k >= 3) 3 x 1 / 1 x 3 (and 3 x 3 for
    k = 5) convs, each rep_scale times wider than the output; their raw and batch-normalised outputs
    are concatenated and mixed by a 1x1 conv. `fuse()` turns it into one k x k conv with bias.
    Output channels = c2.
    Not compared with the authors' code: the MobileIE repository is not in the code store; the
    branch layout follows the MBRConv1/3/5 classes as published in public copies of it.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, rep_scale: int = 4, act=None):
        """c1, c2: input and output channels. k: 1, 3 or 5 (MBRConv1/3/5). s: stride of every branch.
        rep_scale: width multiplier of the branches. act: activation after the block (none in the paper)."""
        super().__init__()
        if k not in BRANCHES:
            raise ArgumentError(f"MBRConv supports kernel sizes {sorted(BRANCHES)}, got {k}")
        wide = c2 * rep_scale
        self.kernel_size, self.stride = k, s
        self.branches = nn.ModuleList(nn.Conv2d(c1, wide, size, s, (size[0] // 2, size[1] // 2))
                                      for size in BRANCHES[k])
        self.norms = nn.ModuleList(nn.BatchNorm2d(wide) for _ in BRANCHES[k])
        self.conv_out = nn.Conv2d(2 * len(BRANCHES[k]) * wide, c2, 1)
        self.act = activation(act)
        self.reparam = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.act(self.reparam(x))
        raw = [conv(x) for conv in self.branches]
        normed = [norm(y) for norm, y in zip(self.norms, raw)]
        return self.act(self.conv_out(torch.cat(raw + normed, dim=1)))

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        k = self.kernel_size
        kernels = [_centred(conv.weight, k) for conv in self.branches]
        biases = [conv.bias for conv in self.branches]
        folded = [fold_bn(kernel, norm, bias) for kernel, bias, norm in zip(kernels, biases, self.norms)]
        kernel = torch.cat(kernels + [f[0] for f in folded])
        bias = torch.cat(biases + [f[1] for f in folded])
        mix = self.conv_out.weight[:, :, 0, 0]
        c1 = kernel.shape[1]
        self.reparam = nn.Conv2d(c1, mix.shape[0], k, self.stride, k // 2).to(kernel.device, kernel.dtype)
        self.reparam.weight.copy_(torch.einsum("om,mikl->oikl", mix, kernel))
        self.reparam.bias.copy_(mix @ bias + self.conv_out.bias)
        del self.branches, self.norms, self.conv_out
