import torch
from torch import nn

from blocks.conv._reparam import fold_bn
from blocks.conv.dbb import DBB
from blocks.registry import register


def _strip_conv(c1: int, c2: int, k: int, s: int, g: int, vertical: bool) -> nn.Conv2d:
    size, pad = ((k, 1), (k // 2, 0)) if vertical else ((1, k), (0, k // 2))
    return nn.Conv2d(c1, c2, size, s, pad, groups=g, bias=False)


def _centred(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """A (k x 1) or (1 x k) kernel placed in the middle of a k x k one."""
    rows, cols = (k - kernel.shape[-2]) // 2, (k - kernel.shape[-1]) // 2
    return nn.functional.pad(kernel, [cols, cols, rows, rows])


@register("conv", channels="arg0", example={"args": [32, 3, 1], "shape": (2, 16, 16, 16)})
class WDBB(DBB):
    """WDBB: YOLO-MIF: Improved YOLOv8 with Multi-Information Fusion for Object Detection in Gray-Scale Images. Advanced Engineering Informatics 2024. https://doi.org/10.1016/j.aei.2024.102709

    Wide diverse branch block: the four DBB branches plus a k x 1 and a 1 x k conv + BN (ACNet-style
    asymmetric branches), summed before the activation; `fuse()` merges all six into one k x k conv.
    Output channels = c2.
    Compared with the authors' code (wandahangFY/YOLO-MIF ultralytics/nn/modules/rep_block.py
    WideDiverseBranchBlock): max abs diff 0 on (2, 16, 16, 16), train and eval mode.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act="silu", internal: int | None = None):
        """c1, c2: input and output channels. k, s, g: kernel, stride, groups of the block's conv.
        act: activation after the sum. internal: width of the 1x1 -> kxk branch (DBB's default)."""
        super().__init__(c1, c2, k, s, g, act, internal)
        self.ver = _strip_conv(c1, c2, k, s, g, vertical=True)
        self.ver_bn = nn.BatchNorm2d(c2)
        self.hor = _strip_conv(c1, c2, k, s, g, vertical=False)
        self.hor_bn = nn.BatchNorm2d(c2)

    def branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        return super().branch_sum(x) + self.ver_bn(self.ver(x)) + self.hor_bn(self.hor(x))

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        k = self.kernel_size
        k_ver, b_ver = fold_bn(self.ver.weight, self.ver_bn)
        k_hor, b_hor = fold_bn(self.hor.weight, self.hor_bn)
        super().fuse()
        self.reparam.weight.add_(_centred(k_ver, k) + _centred(k_hor, k))
        self.reparam.bias.add_(b_ver + b_hor)
        del self.ver, self.ver_bn, self.hor, self.hor_bn
