"""BiFPNAdd: EfficientDet: Scalable and Efficient Object Detection (BiFPN fast normalised fusion). CVPR 2020. https://arxiv.org/abs/1911.09070

out = sum_i w_i * resize(x_i) / (eps + sum_j w_j) with w = ReLU(learned weights). Inputs are
resized to the first input's size as BiFPN does (nearest upsampling, stride-2 3x3 max pooling)
and projected by a 1x1 Conv where their width differs from `c2`."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.neck._align import channel_aligners
from blocks.registry import register


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """BiFPN's resampling: halve with 3x3/2 max pooling until no larger, then nearest to the exact size."""
    while x.shape[-2] >= 2 * size[0] and x.shape[-1] >= 2 * size[1]:
        x = F.max_pool2d(x, 3, 2, 1)
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="nearest")


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 16, 16, 16), (2, 8, 8, 8), (2, 16, 32, 32)]})
class BiFPNAdd(nn.Module):
    def __init__(self, c_in: list, c2: int, eps: float = 1e-4):
        super().__init__()
        self.align = channel_aligners(c_in, c2)
        self.weights = nn.Parameter(torch.ones(len(c_in)))
        self.eps = eps

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        size = xs[0].shape[-2:]
        weights = F.relu(self.weights)
        weights = weights / (weights.sum() + self.eps)
        return sum(w * resize_to(align(x), size) for w, align, x in zip(weights, self.align, xs))
