"""MultiSEAM: YOLO-FaceV2: A Scale and Occlusion Aware Face Detector (multi-head SEAM). Pattern Recognit. 2024. https://arxiv.org/abs/2208.02019

Three SEAM mixers on non-overlapping patch embeddings (patch sizes 3, 5, 7); their pooled vectors and
the input's are averaged into one exp channel gate; keeps channels. Needs H, W >= the largest patch."""
import torch
from torch import nn

from blocks.attention._seam import DepthwiseSeparableUnit, ExpChannelHead
from blocks.registry import register


def _patch_branch(c: int, depth: int, kernel_size: int, patch_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(c),
                         *(DepthwiseSeparableUnit(c, kernel_size) for _ in range(depth)))


@register("attention", channels="same", example={"args": [1], "shape": (2, 32, 16, 16)})
class MultiSEAM(nn.Module):
    def __init__(self, c: int, depth: int = 1, kernel_size: int = 3, patch_size=(3, 5, 7), reduction: int = 16):
        super().__init__()
        self.branches = nn.ModuleList(_patch_branch(c, depth, kernel_size, p) for p in patch_size)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = ExpChannelHead(c, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [self.pool(branch(x)).flatten(1) for branch in self.branches] + [self.pool(x).flatten(1)]
        return self.head(x, torch.stack(pooled).mean(0))
