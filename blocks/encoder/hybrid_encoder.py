"""HybridEncoder: D-FINE/DEIM's efficient hybrid encoder (RT-DETR AIFI + CCFF). CVPR 2025. https://arxiv.org/abs/2410.13842

The whole official encoder as one block, with the official hyper-parameter names: 1x1 input
projections, AIFI on the levels in `use_encoder_idx`, a top-down FPN and a bottom-up PAN of
fusion blocks. version "dfine": RepNCSPELAN4 fusion, SCDown downsampling, linear lateral convs;
"deim": CSPRepLayer fusion, strided conv downsampling, activated lateral convs (RT-DETR style);
"deimv2" (the official DEIMv2 configs' `version: deim`): as "dfine" with the fusion blocks' 3x3
convs dropped (RepNCSPELAN5). DEIMv2 options: csp_type "csp2" (split CSP layers), fuse_op "sum"
(add the two levels instead of concatenating), identity_input_proj (inputs already hidden_dim wide
are not projected). RT-DETRv4: distill_teacher_dim > 0 adds the training-only linear projector of
the last AIFI output to the teacher's width; its map is `extra_outputs["student_distill_output"]`
in training (the Detector adds it to the output dict) and `fuse()` drops it.
Returns one hidden_dim map per input level. Keys match the official `encoder.` state dict.
graphs/ablations/dfine-s-encoder-rows.yaml spells the same network out as one row per piece."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.downsample.scdown import SCDown
from blocks.encoder.aifi import AIFI
from blocks.encoder.csp_rep_layer import CSPRepLayer
from blocks.encoder.rep_ncsp_elan4 import RepNCSPELAN4
from blocks.registry import register


def _outputs(c_in, kwargs):
    return [kwargs["hidden_dim"]] * len(c_in)


@register("encoder", channels=_outputs,
          example={"kwargs": {"feat_strides": [16, 32], "hidden_dim": 32, "use_encoder_idx": [1], "nhead": 4,
                              "dim_feedforward": 64, "expansion": 0.5, "depth_mult": 0.34},
                   "shapes": [(2, 16, 16, 16), (2, 24, 8, 8)]})
class HybridEncoder(nn.Module):
    def __init__(self, in_channels=(512, 1024, 2048), feat_strides=(8, 16, 32), hidden_dim: int = 256,
                 nhead: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0, enc_act="gelu",
                 use_encoder_idx=(2,), num_encoder_layers: int = 1, pe_temperature: float = 10000.0,
                 expansion: float = 1.0, depth_mult: float = 1.0, act="silu", eval_spatial_size=None,
                 version: str = "dfine", csp_type: str = "csp", fuse_op: str = "cat",
                 identity_input_proj: bool = False, distill_teacher_dim: int = 0):
        super().__init__()
        if version not in ("dfine", "deim", "deimv2"):
            raise ArgumentError(f"version must be 'dfine', 'deim' or 'deimv2', got {version!r}")
        if fuse_op not in ("cat", "sum"):
            raise ArgumentError(f"fuse_op must be 'cat' or 'sum', got {fuse_op!r}")
        if len(feat_strides) != len(in_channels):
            raise ArgumentError(f"feat_strides {list(feat_strides)} must give one stride per input "
                             f"({len(in_channels)} inputs)")
        self.in_channels, self.use_encoder_idx = list(in_channels), list(use_encoder_idx)
        self.num_encoder_layers, self.fuse_op = num_encoder_layers, fuse_op
        levels, depth = len(in_channels), round(3 * depth_mult)
        # the official deploy() leaves these projections' BN unfused: plain Sequential, no fuse()
        self.input_proj = nn.ModuleList(
            nn.Identity() if identity_input_proj and c == hidden_dim else
            nn.Sequential(OrderedDict([("conv", nn.Conv2d(c, hidden_dim, 1, bias=False)),
                                       ("norm", nn.BatchNorm2d(hidden_dim))]))
            for c in in_channels)
        self.encoder = nn.ModuleList(
            AIFI(hidden_dim, nhead, dim_feedforward, dropout, enc_act, num_encoder_layers, pe_temperature,
                 feat_strides[i], eval_spatial_size)
            for i in use_encoder_idx)

        fused = hidden_dim if fuse_op == "sum" else hidden_dim * 2

        def fusion():
            if version in ("dfine", "deimv2"):
                return RepNCSPELAN4(fused, hidden_dim, hidden_dim * 2, round(expansion * hidden_dim // 2), depth,
                                    act=act, csp_type=csp_type, post_conv=version == "dfine")
            return CSPRepLayer(fused, hidden_dim, depth, expansion, act=act)

        lateral_act = act if version == "deim" else None
        self.lateral_convs = nn.ModuleList(Conv(hidden_dim, hidden_dim, 1, 1, act=lateral_act)
                                           for _ in range(levels - 1))
        self.fpn_blocks = nn.ModuleList(fusion() for _ in range(levels - 1))
        self.downsample_convs = nn.ModuleList(
            Conv(hidden_dim, hidden_dim, 3, 2, act=act) if version == "deim"
            else nn.Sequential(SCDown(hidden_dim, hidden_dim, 3, 2))
            for _ in range(levels - 1))
        self.pan_blocks = nn.ModuleList(fusion() for _ in range(levels - 1))
        if distill_teacher_dim > 0:
            self.feature_projector = nn.Sequential(nn.Linear(hidden_dim, distill_teacher_dim))
        self.extra_outputs: dict = {}

    def _fuse_levels(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.fuse_op == "sum" else torch.cat([a, b], dim=1)

    def fuse(self):
        """Inference form: the distillation projector only trains."""
        if hasattr(self, "feature_projector"):
            del self.feature_projector

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        proj = [project(f) for project, f in zip(self.input_proj, feats)]
        if self.num_encoder_layers > 0:
            for aifi, level in zip(self.encoder, self.use_encoder_idx):
                proj[level] = aifi(proj[level])
        self.extra_outputs = {}
        if self.training and hasattr(self, "feature_projector") and self.num_encoder_layers > 0:
            # RT-DETRv4: the last AIFI output, projected per token to the teacher's width
            tokens = proj[self.use_encoder_idx[-1]].permute(0, 2, 3, 1)
            self.extra_outputs["student_distill_output"] = self.feature_projector(tokens).permute(0, 3, 1, 2)

        # top-down: each coarser map passes its lateral conv, is upsampled and fused with the finer one;
        # the lateral outputs are what the bottom-up path fuses with later
        inner = [proj[-1]]
        for step, level in enumerate(range(len(proj) - 1, 0, -1)):
            inner[0] = self.lateral_convs[step](inner[0])
            upsampled = F.interpolate(inner[0], scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[step](self._fuse_levels(upsampled, proj[level - 1])))

        outs = [inner[0]]
        for step in range(len(proj) - 1):
            down = self.downsample_convs[step](outs[-1])
            outs.append(self.pan_blocks[step](self._fuse_levels(down, inner[step + 1])))
        return outs
