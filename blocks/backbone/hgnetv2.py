"""HGNetv2: PP-HGNetV2 backbone B0-B6 (as in D-FINE; Atto/Femto/Pico as in DEIMv2). CVPR 2025. https://arxiv.org/abs/2410.13842

The whole official backbone as one block with the official arguments (name, use_lab, return_idx,
freeze_stem_only, freeze_at, freeze_norm, pretrained = a LOCAL checkpoint path); returns the
stage outputs in `return_idx`. Graphs usually spell it out as HGStem + HGStage rows instead."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.backbone._hgnetv2 import ARCHS, apply_freezing, load_pretrained
from blocks.backbone.hg_stage import HGStage
from blocks.backbone.hg_stem import HGStem
from blocks.registry import register


def _stage_channels(c_in, kwargs):
    stages = ARCHS[kwargs["name"]][1]
    return [stages[i][1] for i in kwargs["return_idx"]]


@register("backbone", channels=_stage_channels,
          example={"args": ["B0"], "kwargs": {"use_lab": True, "return_idx": [2, 3]}, "shape": (1, 3, 64, 64)})
class HGNetv2(nn.Module):
    def __init__(self, in_chs: int = 3, name: str = "B0", use_lab: bool = False, return_idx=(1, 2, 3),
                 freeze_stem_only: bool = True, freeze_at: int = 0, freeze_norm: bool = True,
                 pretrained: str | None = None):
        super().__init__()
        if name not in ARCHS:
            raise ArgumentError(f"unknown HGNetv2 variant {name!r}; choose from {', '.join(ARCHS)}")
        (_, stem_mid, stem_out), stages = ARCHS[name]
        self.return_idx = list(return_idx)
        self.stem = HGStem(in_chs, stem_mid, stem_out, use_lab)
        channels = [stem_out] + [s[1] for s in stages]
        self.stages = nn.ModuleList(
            HGStage(channels[i], mid, out, blocks, layers, downsample, light, kernel, use_lab)
            for i, (mid, out, blocks, downsample, light, kernel, layers) in enumerate(stages))
        if freeze_at >= 0:  # official semantics: the stem always, stages 0..freeze_at unless stem-only
            apply_freezing(self.stem, True, False)
            if not freeze_stem_only:
                for stage in self.stages[:freeze_at + 1]:
                    apply_freezing(stage, True, False)
        apply_freezing(self, False, freeze_norm)
        if pretrained:
            load_pretrained(self, pretrained, "", "HGNetv2")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outputs.append(x)
        return outputs
