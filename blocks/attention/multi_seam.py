"""MultiSEAM: YOLO-FaceV2: A Scale and Occlusion Aware Face Detector (multi-head SEAM). Pattern Recognit. 2024. https://arxiv.org/abs/2208.02019

Three SEAM mixers on non-overlapping patch embeddings (patch sizes 3, 5, 7); their pooled vectors and
the input's are averaged into one exp channel gate; keeps channels. Maps smaller than a patch are
replicate-padded up to it (the authors' code needs H, W >= the largest patch)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.attention._seam import DepthwiseSeparableUnit, ExpChannelHead
from blocks.registry import register


class PatchBranch(nn.Module):
    """Patch embedding (p x p conv, stride p) -> GELU -> BN, then `depth` SEAM units."""

    def __init__(self, c: int, depth: int, kernel_size: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.embed = nn.Sequential(nn.Conv2d(c, c, patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(c))
        self.mixer = nn.Sequential(*(DepthwiseSeparableUnit(c, kernel_size) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = max(0, self.patch_size - x.shape[2]), max(0, self.patch_size - x.shape[3])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.mixer(self.embed(x))


@register("attention", channels="same", example={"args": [1], "shape": (2, 32, 16, 16)})
class MultiSEAM(nn.Module):
    def __init__(self, c: int, depth: int = 1, kernel_size: int = 3, patch_size=(3, 5, 7), reduction: int = 16):
        super().__init__()
        self.branches = nn.ModuleList(PatchBranch(c, depth, kernel_size, p) for p in patch_size)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = ExpChannelHead(c, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [self.pool(branch(x)).flatten(1) for branch in self.branches] + [self.pool(x).flatten(1)]
        return self.head(x, torch.stack(pooled).mean(0))
