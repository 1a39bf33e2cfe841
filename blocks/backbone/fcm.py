"""FCM: FBRT-YOLO: Faster and Better for Real-Time Aerial Image Detection. AAAI 2025. https://arxiv.org/abs/2504.20670

The feature complementary mapping module: the channels split into a semantic part (two 3x3 convs and
a 1x1 conv to c) and a spatial part (a 1x1 conv to c); a spatial gate from the spatial part
(1x1 conv to one channel, BN, sigmoid) weights the semantic features, a channel gate from the
semantic part (depth-wise 3x3, global pool, sigmoid) weights the spatial features; their sum goes
through a 1x1 conv. All convs are conv-BN-SiLU. Keeps channels (c >= 4).
Compared with the authors' code (galaxy-oss/FCM ultralytics/nn/modules/conv.py FCM, whose second
argument is unused): max abs diff 0 on (2, 32, 16, 16)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class FCM(nn.Module):
    def __init__(self, c: int, semantic_ratio: float = 0.25):
        """c: channels; semantic_ratio: share of the channels in the 3x3 (semantic) branch (FCM and
        FCM_1 of the authors' code use 1/4, FCM_2 and FCM_3 use 3/4)."""
        super().__init__()
        self.semantic = int(c * semantic_ratio)
        if not 0 < self.semantic < c:
            raise ChannelError(f"FCM: semantic_ratio {semantic_ratio} leaves an empty branch for {c} channels")
        spatial = c - self.semantic
        self.conv1 = Conv(self.semantic, self.semantic, 3)
        self.conv12 = Conv(self.semantic, self.semantic, 3)
        self.conv123 = Conv(self.semantic, c, 1)
        self.conv2 = Conv(spatial, c, 1)
        self.conv3 = Conv(c, c, 1)
        self.spatial_gate = nn.Sequential(nn.Conv2d(c, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.channel_gate = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), nn.AdaptiveAvgPool2d(1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        semantic, spatial = x.split([self.semantic, x.shape[1] - self.semantic], 1)
        semantic = self.conv123(self.conv12(self.conv1(semantic)))
        spatial = self.conv2(spatial)
        return self.conv3(self.spatial_gate(spatial) * semantic + self.channel_gate(semantic) * spatial)
