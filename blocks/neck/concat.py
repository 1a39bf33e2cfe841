"""Concat: concatenate the inputs along channels. Feature fusion as in FPN/PAN necks (Ultralytics).

Output channels are the sum of the input channels; spatial sizes must agree."""
import torch
from torch import nn

from blocks.registry import register


@register("neck", channels="sum", c_in=False, example={"args": [], "shapes": [(2, 8, 16, 16), (2, 16, 16, 16)]})
class Concat(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.dim)
