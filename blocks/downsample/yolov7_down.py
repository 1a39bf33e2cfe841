"""YOLOV7Down: YOLOv7: Trainable Bag-of-Freebies Sets New State-of-the-Art for Real-Time Object Detectors. CVPR 2023. https://arxiv.org/abs/2207.02696

YOLOv7's MP downsampling: a 2x2 max pool + 1x1 Conv branch concatenated with a 1x1 Conv + strided
3x3 Conv branch, each with half of the `c2` output channels.

Compared with the authors' code (the plug-in's downsample/YOLOV7Down.py, YOLOv7's MP-1 block):
max abs diff 0 on (2, 16, 16, 16)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("downsample", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class YOLOV7Down(nn.Module):
    def __init__(self, c1: int, c2: int):
        """c1: input channels. c2: output channels (even: each branch gives half)."""
        super().__init__()
        if c2 % 2:
            raise ChannelError(f"YOLOV7Down splits its output between two branches and needs even c2, got {c2}")
        self.pool_branch = nn.Sequential(nn.MaxPool2d(2, 2), Conv(c1, c2 // 2, 1))
        self.conv_branch = nn.Sequential(Conv(c1, c2 // 2, 1), Conv(c2 // 2, c2 // 2, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.pool_branch(x), self.conv_branch(x)), 1)
