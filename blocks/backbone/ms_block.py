"""MSBlock: YOLO-MS: Rethinking Multi-Scale Representation Learning for Real-time Object Detection. IEEE TPAMI 2025. https://arxiv.org/abs/2308.05480

YOLO-MS's multi-scale building block: a 1x1 conv expands to in_expand_ratio x c1 channels, split into
one group per kernel size; each group after the first adds the previous group's output and runs
through layers_num (1x1 up to mid_expand_ratio x, depth-wise k x k, 1x1 back) layers (kernel 1 = an
identity group); the groups are concatenated and a 1x1 conv gives c2 channels. Every conv is
conv-BN-SiLU. Output width c2 (channel rule "arg0").
Compared with the authors' code (FishAndWasabi/YOLO-MS yoloms/models/layers/msblock.py MSBlock, mmcv
ConvModule replaced by conv-BN-SiLU): max abs diff 0 on (2, 16, 16, 16)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


def _ms_layer(c: int, hidden: int, k: int, act) -> nn.Sequential:
    return nn.Sequential(Conv(c, hidden, 1, act=act), Conv(hidden, hidden, k, g=hidden, act=act), Conv(hidden, c, 1, act=act))


@register("backbone", channels="arg0", example={"args": [16], "shape": (2, 16, 16, 16)})
class MSBlock(nn.Module):
    def __init__(self, c1: int, c2: int, kernel_sizes=(1, 3, 3), in_expand_ratio: float = 3.0,
                 mid_expand_ratio: float = 2.0, layers_num: int = 3, in_down_ratio: int = 1, act="silu"):
        """c1, c2: input and output channels; kernel_sizes: one branch per kernel (1 = identity branch;
        the YOLO-MS backbone stages use (1, 3, 3), (1, 5, 5), (1, 7, 7), (1, 9, 9)); in_expand_ratio,
        in_down_ratio: the expanded width is int(c1 * in_expand_ratio) // in_down_ratio; mid_expand_ratio:
        width of the depth-wise convs / branch width; layers_num: layers per branch; act: activation."""
        super().__init__()
        expanded = int(c1 * in_expand_ratio) // in_down_ratio
        if expanded % len(kernel_sizes):
            raise ChannelError(f"MSBlock: expanded width {expanded} is not divisible into {len(kernel_sizes)} branches",
                               hint="choose c1 and in_expand_ratio so that the expanded width splits evenly")
        self.branch = expanded // len(kernel_sizes)
        hidden = int(self.branch * mid_expand_ratio)
        self.in_conv = Conv(c1, expanded, 1, act=act)
        self.mid_convs = nn.ModuleList(
            nn.Identity() if k == 1 else nn.Sequential(*(_ms_layer(self.branch, hidden, k, act) for _ in range(layers_num)))
            for k in kernel_sizes)
        self.out_conv = Conv(expanded, c2, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.in_conv(x).split(self.branch, 1)
        outputs = []
        for i, (group, branch) in enumerate(zip(groups, self.mid_convs)):
            outputs.append(branch(group + outputs[-1] if i else group))
        return self.out_conv(torch.cat(outputs, 1))
