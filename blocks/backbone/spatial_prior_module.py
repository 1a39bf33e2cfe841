"""SpatialPriorModule: DEIMv2's Spatial Tuning Adapter CNN (Real-Time Object Detection Meets DINOv3). arXiv 2025. https://arxiv.org/abs/2509.20787

A light CNN on the image giving detail maps at strides 8, 16 and 32 (2c, 4c, 4c channels) that
DINOv3STAs concatenates with the resized ViT features. Keys as the official `sta.` module. The
official deploy keeps its BNs; `Detector.deploy()` folds them (adjacent conv, BN in its Sequentials)."""
import torch
from torch import nn

from blocks.registry import register


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out)]


@register("backbone", channels=lambda c_in, kw: [2 * kw["inplanes"], 4 * kw["inplanes"], 4 * kw["inplanes"]],
          example={"args": [8], "shape": (2, 3, 64, 64)})
class SpatialPriorModule(nn.Module):
    def __init__(self, c1: int = 3, inplanes: int = 16):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(c1, inplanes), nn.GELU(), nn.MaxPool2d(3, 2, 1))  # stride 4
        self.conv2 = nn.Sequential(*_conv_bn(inplanes, 2 * inplanes))                        # stride 8
        self.conv3 = nn.Sequential(nn.GELU(), *_conv_bn(2 * inplanes, 4 * inplanes))         # stride 16
        self.conv4 = nn.Sequential(nn.GELU(), *_conv_bn(4 * inplanes, 4 * inplanes))         # stride 32

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c8 = self.conv2(self.stem(x))
        c16 = self.conv3(c8)
        return [c8, c16, self.conv4(c16)]
