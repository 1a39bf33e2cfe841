"""HGStage: PP-HGNetV2 stage (as in D-FINE). CVPR 2025. https://arxiv.org/abs/2410.13842

An optional stride-2 depthwise conv-BN, then `block_num` HGBlocks (all but the first residual).
Keys match the official `backbone.stages.<i>`; `freeze`/`freeze_norm` reproduce the official
`freeze_at`/`freeze_norm` per stage; `pretrained` loads the matching stage of a local checkpoint."""
import torch
from torch import nn

from blocks.backbone._hgnetv2 import ConvBNAct, apply_freezing, load_pretrained
from blocks.backbone.hg_block import HGBlock
from blocks.registry import register


@register("backbone", channels=lambda c_in, kw: kw["out_chs"],
          example={"args": [16, 64, 2, 3], "kwargs": {"light_block": True, "kernel_size": 5, "use_lab": True},
                   "shape": (2, 32, 16, 16)})
class HGStage(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, block_num: int, layer_num: int,
                 downsample: bool = True, light_block: bool = False, kernel_size: int = 3, use_lab: bool = False,
                 agg: str = "se", drop_path: float | list = 0.0, freeze: bool = False, freeze_norm: bool = False,
                 pretrained: str | None = None):
        super().__init__()
        self.downsample = (ConvBNAct(in_chs, in_chs, 3, 2, g=in_chs, use_act=False, use_lab=use_lab)
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*(
            HGBlock(in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_num, kernel_size, residual=i > 0,
                    light_block=light_block, use_lab=use_lab, agg=agg,
                    drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path)
            for i in range(block_num)))
        apply_freezing(self, freeze, freeze_norm)
        if pretrained:
            load_pretrained(self, pretrained, r"stages\.\d+\.", "HGStage")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))
