"""SCDown: spatial-channel decoupled downsampling (YOLOv10). NeurIPS 2024. https://arxiv.org/abs/2405.14458

A 1x1 conv-BN sets the channels, then a stride-s depthwise k x k conv-BN downsamples; no
activations (as D-FINE's HybridEncoder uses it). Keys: cv1/cv2 with conv/norm."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("downsample", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 16, 16)})
class SCDown(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1, act=None)
        self.cv2 = Conv(c2, c2, k, s, g=c2, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))
