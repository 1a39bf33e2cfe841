"""HGBlock: PP-HGNetV2 block (as in D-FINE). CVPR 2025. https://arxiv.org/abs/2410.13842

`num_layers` stacked convs (plain or light: 1x1 + depthwise), all outputs concatenated with the
input and aggregated by 1x1 convs: "se" = squeeze to out/2 then expand, "ese" = one conv + ESE gate."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.backbone._hgnetv2 import ConvBNAct, EffectiveSE, LightConvBNAct
from blocks.registry import register


@register("backbone", channels=lambda c_in, kw: kw["out_chs"],
          example={"args": [16, 32, 3], "kwargs": {"light_block": True, "use_lab": True}, "shape": (2, 32, 16, 16)})
class HGBlock(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, layer_num: int, kernel_size: int = 3,
                 residual: bool = False, light_block: bool = False, use_lab: bool = False, agg: str = "ese",
                 drop_path: float = 0.0):
        super().__init__()
        if agg not in ("se", "ese"):
            raise ArgumentError(f"agg must be 'se' or 'ese', got {agg!r}")
        self.residual = residual
        self.layers = nn.ModuleList(
            LightConvBNAct(in_chs if i == 0 else mid_chs, mid_chs, kernel_size, use_lab=use_lab) if light_block
            else ConvBNAct(in_chs if i == 0 else mid_chs, mid_chs, kernel_size, use_lab=use_lab)
            for i in range(layer_num))
        total = in_chs + layer_num * mid_chs
        if agg == "se":
            self.aggregation = nn.Sequential(ConvBNAct(total, out_chs // 2, 1, use_lab=use_lab),
                                             ConvBNAct(out_chs // 2, out_chs, 1, use_lab=use_lab))
        else:
            self.aggregation = nn.Sequential(ConvBNAct(total, out_chs, 1, use_lab=use_lab), EffectiveSE(out_chs))
        # named as the official block: a Dropout on the residual branch, not stochastic depth
        self.drop_path = nn.Dropout(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        y = self.aggregation(torch.cat(outputs, dim=1))
        return self.drop_path(y) + x if self.residual else y
