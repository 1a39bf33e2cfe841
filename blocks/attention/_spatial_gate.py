"""The spatial gate shared by CBAM and Triplet Attention: channel max and mean maps -> k x k conv + BN -> sigmoid."""
import torch
from torch import nn

from blocks.conv.conv import Conv


class SpatialGate(nn.Module):
    """Scales x by sigmoid(conv_bn([max_c(x), mean_c(x)])) (CBAM's spatial gate; Triplet Attention's Z-pool gate)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = Conv(2, 1, kernel_size, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(pooled))
