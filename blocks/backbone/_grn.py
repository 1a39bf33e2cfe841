"""GRN: global response normalisation (ConvNeXt V2), shared by the UniRepLKNet and OverLoCK blocks."""
import torch
from torch import nn


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2) on a (B, C, H, W) map; `beta` is None once folded away."""

    def __init__(self, c: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
        y = (self.gamma * (spatial / (spatial.mean(dim=1, keepdim=True) + 1e-6)) + 1) * x
        return y if self.beta is None else y + self.beta
