"""FullPAD_Tunnel: YOLOv13: Real-Time Object Detection with Hypergraph-Enhanced Adaptive Visual Perception. arXiv 2025. https://arxiv.org/abs/2506.17733

YOLOv13's full-pipeline aggregation-and-distribution tunnel: x + g * y for inputs [x, y] with one
learnable scalar g starting at 0, so an enhanced map (HyperACE's) joins a path without changing it
at the start. Output: the first input's channels (both must agree).

Compared with the authors' code (the plug-in's neck_module/HyperACE.py FullPAD_Tunnel): the same
formula; tested by hand in tests/test_zoo2_fusion.py."""
import torch
from torch import nn

from blocks.registry import register


@register("neck", channels="first", c_in=False, example={"args": [], "shapes": [(2, 16, 8, 8), (2, 16, 8, 8)]})
class FullPAD_Tunnel(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.tensor(0.0))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] + self.gate * xs[1]
