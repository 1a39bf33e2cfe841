"""IFM: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's information fusion module (low-IFM): a 1x1 Conv to `embed_dim`, `fuse_block_num`
RepVGG blocks (3x3 + 1x1 + identity BN, ReLU; `fuse()` merges them), a 1x1 Conv to the global
channels that the injection rows split among themselves. Output: sum(ouc) channels.

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py): max abs diff 0 on
(2, 48, 8, 8)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.conv.rep_conv import RepConv
from blocks.registry import register


@register("neck", channels=lambda c_in, kw: sum(kw["ouc"]), example={"args": [[16, 8]], "kwargs": {"embed_dim": 24}, "shape": (2, 48, 8, 8)})
class IFM(nn.Module):
    def __init__(self, c1: int, ouc: list, embed_dim: int = 96, fuse_block_num: int = 3):
        """c1: input channels (SimFusion_4in's). ouc: the global channels for each injection point,
        e.g. [64, 32]. embed_dim: width of the RepVGG stack (Gold-YOLO's embed_dim_p). fuse_block_num:
        RepVGG blocks."""
        super().__init__()
        self.layers = nn.Sequential(Conv(c1, embed_dim, 1),
                                    *(RepConv(embed_dim, embed_dim, 3, act="relu") for _ in range(fuse_block_num)),
                                    Conv(embed_dim, sum(ouc), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
