"""DWR: DWRSeg: Rethinking Efficient Acquisition of Multi-scale Contextual Information for Real-time Semantic Segmentation. arXiv 2022. https://arxiv.org/abs/2212.01173

The Dilation-wise Residual module in two steps: region residualisation (a 3x3 conv to c/2 channels
that forms region-like maps) and semantic residualisation (3x3 convs with dilation 1, 3 and 5 on those
maps, the rate-1 branch given twice the channels), concatenated, merged by a 1x1 conv and added to the
input. Keeps channels.
Departs from the paper as the DEIM plug-in (and the YOLO ports it follows) does: the dilated convs are
dense conv-BN-SiLU rather than depth-wise conv-BN, and the 1x1 merge carries its own BN-SiLU.
Not compared: the authors published no PyTorch code that could be found."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class DWR(nn.Module):
    def __init__(self, c: int, act="silu"):
        """c: channels (even: the region maps have c/2); act: activation of every conv."""
        super().__init__()
        if c % 2:
            raise ChannelError(f"DWR needs an even channel count (region maps have c/2), got {c}")
        self.region = Conv(c, c // 2, 3, act=act)
        self.rate1 = Conv(c // 2, c, 3, act=act)
        self.rate3 = Conv(c // 2, c // 2, 3, d=3, act=act)
        self.rate5 = Conv(c // 2, c // 2, 3, d=5, act=act)
        self.merge = Conv(2 * c, c, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = self.region(x)
        return x + self.merge(torch.cat([self.rate1(region), self.rate3(region), self.rate5(region)], 1))
