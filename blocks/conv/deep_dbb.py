import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.conv.dbb import DBB
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [32, 3, 1], "shape": (2, 16, 16, 16)})
class DeepDBB(DBB):
    """DeepDBB: YOLO-MIF: Improved YOLOv8 with Multi-Information Fusion for Object Detection in Gray-Scale Images. Advanced Engineering Informatics 2024. https://doi.org/10.1016/j.aei.2024.102709

    Deep diverse branch block: a DBB whose k x k conv + BN branch is itself a (linear) DBB, so the
    block nests two levels of diverse branches; `fuse()` merges the inner DBB, then the outer
    branches, into one k x k conv. Output channels = c2.
    Compared with the authors' code (wandahangFY/YOLO-MIF ultralytics/nn/modules/rep_block.py
    DeepDiverseBranchBlock, the last definition in the file): max abs diff 0 on (2, 16, 16, 16),
    train and eval mode.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act="silu", internal: int | None = None):
        """c1, c2: input and output channels. k, s, g: kernel, stride, groups. act: activation after
        the sum. internal: width of the 1x1 -> kxk branches of both levels (DBB's default)."""
        super().__init__(c1, c2, k, s, g, act, internal)
        self.origin = DBB(c1, c2, k, s, g, act=None, internal=internal)

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        self.origin.fuse()
        # DBB.fuse reads its k x k branch as a Conv: hand it the inner block's merged conv as one
        folded = Conv(self.origin.reparam.in_channels, self.origin.reparam.out_channels, self.kernel_size,
                      self.origin.reparam.stride, g=self.groups, act=None)
        folded.conv, folded.norm = self.origin.reparam, nn.Identity()
        self.origin = folded
        super().fuse()
