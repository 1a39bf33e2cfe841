"""FRFN: Adapt or Perish: Adaptive Sparse Transformer with Attentive Feature Refinement for Image Restoration (AST's feature refinement FFN). CVPR 2024. https://arxiv.org/abs/2404.02337

A 3x3 conv on the first quarter of the channels (partial conv, the rest pass), 1x1 expansion + GELU
to two halves, GELU(3x3 depth-wise(first)) * second, 1x1 projection back. Keeps channels.
Compared with the authors' code (joshyZhou/AST model.py, FRFN): max abs diff 1.3e-5 on (2, 32, 8, 8), outputs up to 37 (float32 rounding), random weights."""
import torch
from torch import nn

from blocks.common import activation
from blocks.registry import ChannelError, register


@register("mlp", channels="same", example={"args": [], "shape": (2, 32, 8, 8)})
class FRFN(nn.Module):
    def __init__(self, c: int, mlp_ratio: float = 4.0, act="gelu"):
        """c: at least 4 (a quarter gets the partial conv); mlp_ratio: hidden width / c (AST: 4)."""
        super().__init__()
        if c < 4:
            raise ChannelError(f"FRFN convolves a quarter of the channels; {c} is too few")
        hidden = int(c * mlp_ratio)
        self.dim_conv = c // 4
        self.partial_conv3 = nn.Conv2d(self.dim_conv, self.dim_conv, 3, padding=1, bias=False)
        self.linear1 = nn.Sequential(nn.Conv2d(c, 2 * hidden, 1), activation(act))
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), activation(act))
        self.linear2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.partial_conv3(x[:, :self.dim_conv]), x[:, self.dim_conv:]), 1)
        x1, x2 = self.linear1(x).chunk(2, 1)
        return self.linear2(self.dwconv(x1) * x2)
