"""TripletAttention: Rotate to Attend: Convolutional Triplet Attention Module. WACV 2021. https://arxiv.org/abs/2010.03045

Three Z-pool spatial gates over the (C,W), (H,C) and (H,W) planes of the rotated map, averaged;
parameter-light (three 7x7 convs on 2 channels), keeps channels."""
import torch
from torch import nn

from blocks.attention._spatial_gate import SpatialGate
from blocks.registry import register


@register("attention", channels="same", c_in=False, example={"args": [], "shape": (2, 32, 16, 16)})
class TripletAttention(nn.Module):
    def __init__(self, no_spatial: bool = False, kernel_size: int = 7):
        super().__init__()
        self.gate_cw = SpatialGate(kernel_size)  # H plays the channel role: attends over (C, W)
        self.gate_hc = SpatialGate(kernel_size)  # W plays the channel role: attends over (H, C)
        self.gate_hw = None if no_spatial else SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_cw = self.gate_cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        out_hc = self.gate_hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        if self.gate_hw is None:
            return (out_cw + out_hc) / 2
        return (out_cw + out_hc + self.gate_hw(x)) / 3
