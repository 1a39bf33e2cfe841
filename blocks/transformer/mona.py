"""Mona: 5%>100%: Breaking Performance Shackles of Full Fine-Tuning on Visual Recognition Tasks (multi-cognitive visual adapter). CVPR 2025. https://openaccess.thecvf.com/content/CVPR2025/html/Yin_5100_Breaking_Performance_Shackles_of_Full_Fine-Tuning_on_Visual_Recognition_CVPR_2025_paper.html

x + up(dropout(GELU(filters(down(norm_scaled(x)))))): a scaled LayerNorm (LN(x) * gamma + x * gamma_x,
gamma starting at 1e-6), a 1x1 down-projection to 64 channels, multi-cognitive filters (mean of 3x3,
5x5 and 7x7 depth-wise convs plus the input, then + a 1x1 conv of that), GELU, dropout 0.1, a 1x1
up-projection, and the residual. Keeps channels.
Compared with the authors' code (Leiyi-Hu/mona Swin-Transformer-Classification/mmcls/models/backbones/
swin_transformer_mona.py, Mona): max abs diff 7e-7 on (2, 32, 8, 8), outputs up to 4.6, random weights."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


class _MonaOp(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(c, c, k, padding=k // 2, groups=c) for k in (3, 5, 7))
        self.projector = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (self.conv1(x) + self.conv2(x) + self.conv3(x)) / 3.0 + x
        return x + self.projector(x)


@register("transformer", channels="same", example={"args": [], "kwargs": {"hidden": 16}, "shape": (2, 32, 8, 8)})
class Mona(nn.Module):
    def __init__(self, c: int, hidden: int = 64, dropout: float = 0.1):
        """hidden: the adapter's bottleneck width (Mona: 64); dropout: after the GELU (Mona: 0.1)."""
        super().__init__()
        self.norm = LayerNorm2d(c)
        self.gamma = nn.Parameter(torch.full((c, 1, 1), 1e-6))
        self.gammax = nn.Parameter(torch.ones(c, 1, 1))
        self.project1 = nn.Conv2d(c, hidden, 1)
        self.adapter_conv = _MonaOp(hidden)
        self.dropout = nn.Dropout(dropout)
        self.project2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) * self.gamma + x * self.gammax
        y = F.gelu(self.adapter_conv(self.project1(y)))
        return x + self.project2(self.dropout(y))
