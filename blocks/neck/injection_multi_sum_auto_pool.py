"""InjectionMultiSum_Auto_pool: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's information injection: the `flag`-th part of the global map (split by `global_inp`)
gives a gate (h-sigmoid) and a feature, both by 1x1 Conv + BN, resized to the local map (average
pooling when the global map is larger, bilinear upsampling otherwise); output = embed(local) *
gate + feature at `oup` channels. Inputs [local, global].

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py): max abs diff 0 on
[(2, 16, 8, 8), (2, 24, 4, 4)] and on a larger global map. As there, the pooled branch applies no
h-sigmoid to the gate (only the upsampled one does)."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("neck", channels="arg0", example={"args": [16, [8, 16], 1], "shapes": [(2, 16, 8, 8), (2, 24, 4, 4)]})
class InjectionMultiSum_Auto_pool(nn.Module):
    def __init__(self, c_in: list, oup: int, global_inp: list, flag: int):
        """c_in: [local, global] channels. oup: output channels. global_inp: how the global map's
        channels split among the injection points (must sum to c_in[1]). flag: this point's part."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"InjectionMultiSum_Auto_pool takes [local, global], got {len(c_in)} inputs")
        if sum(global_inp) != c_in[1]:
            raise ChannelError(f"InjectionMultiSum_Auto_pool: global_inp {list(global_inp)} must sum to the global "
                               f"map's {c_in[1]} channels", hint="match the IFM/TopBasicLayer row's ouc list")
        if not 0 <= flag < len(global_inp):
            raise ArgumentError(f"flag {flag} is out of range for global_inp {list(global_inp)}")
        self.split, self.flag = list(global_inp), flag
        self.local_embedding = Conv(c_in[0], oup, 1, act=None)
        self.global_embedding = Conv(global_inp[flag], oup, 1, act=None)
        self.global_act = Conv(global_inp[flag], oup, 1, act=None)
        self.act = nn.Hardsigmoid()   # ReLU6(x + 3) / 6, Gold-YOLO's h_sigmoid

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        local, global_map = xs
        size = local.shape[-2:]
        part = global_map.split(self.split, 1)[self.flag]
        gate, feature = self.global_act(part), self.global_embedding(part)
        if size[0] < part.shape[-2]:
            gate, feature = F.adaptive_avg_pool2d(gate, size), F.adaptive_avg_pool2d(feature, size)
        else:
            gate = F.interpolate(self.act(gate), size=size, mode="bilinear", align_corners=False)
            feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        return self.local_embedding(local) * gate + feature
