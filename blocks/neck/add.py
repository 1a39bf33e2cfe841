"""Add: element-wise sum of the inputs (D-FINE/DEIM `fuse_op: sum`, residual shortcuts).

All inputs must have the same channels; the output keeps them."""
import torch
from torch import nn

from blocks.registry import register


@register("neck", channels="first", c_in=False, example={"args": [], "shapes": [(2, 16, 16, 16), (2, 16, 16, 16)]})
class Add(nn.Module):
    def __init__(self):  # explicit: the parser binds row args to the constructor's own signature
        super().__init__()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
