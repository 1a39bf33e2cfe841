"""MFM: Depth Information Assisted Collaborative Mutual Promotion Network for Single Image Dehazing (DCMPNet, modulation fusion module). CVPR 2024. https://arxiv.org/abs/2403.01105

Selective-kernel style fusion: the pooled sum of the inputs drives an MLP whose per-input,
per-channel logits are softmax-normalised across the inputs and weight their sum. Any number of
same-size inputs, projected to `c2` channels where needed."""
import torch
from torch import nn

from blocks.neck._align import channel_aligners
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 16, 16, 16), (2, 8, 16, 16)]})
class MFM(nn.Module):
    def __init__(self, c_in: list, c2: int, reduction: int = 8):
        super().__init__()
        self.align = channel_aligners(c_in, c2)
        self.height = len(c_in)
        hidden = max(c2 // reduction, 4)
        self.mlp = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c2, hidden, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, c2 * self.height, 1, bias=False))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        feats = torch.stack([align(x) for align, x in zip(self.align, xs)], 1)     # (B, n, C, H, W)
        b, n, c = feats.shape[:3]
        weights = self.mlp(feats.sum(1)).view(b, n, c, 1, 1).softmax(1)
        return (feats * weights).sum(1)
