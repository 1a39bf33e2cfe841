"""Pieces shared by the HGNetv2 blocks (HGStem, HGBlock, HGStage, HGNetv2): conv-BN-ReLU units with
the learnable affine tail, the ESE gate, frozen batch norm, freezing and local pretrained loading.

Attribute names (conv, bn, lab, layers, aggregation, ...) follow the official D-FINE/DEIM
HGNetv2, so official checkpoints load by prefix alone. The official deploy() keeps these units'
BN; `Detector.deploy()` folds it into the conv (`fold_bn`), and `deploy(official=True)` keeps it, for
the official deploy parameter counts."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from blocks.common import act_in_place, fuse_conv_bn
from core.checkpoint_io import model_weights, read_checkpoint
from core.errors import CheckpointError

# name: (stem [in, mid, out], stages [mid, out, num_blocks, downsample, light_block, kernel_size, num_layers])
ARCHS = {
    # DEIMv2's three-stage variants (stride 16 at most), B0's first two stages
    "Atto": ([3, 16, 16], [[16, 64, 1, False, False, 3, 3], [32, 256, 1, True, False, 3, 3],
                           [64, 256, 1, True, True, 3, 3]]),
    "Femto": ([3, 16, 16], [[16, 64, 1, False, False, 3, 3], [32, 256, 1, True, False, 3, 3],
                            [64, 512, 1, True, True, 5, 3]]),
    "Pico": ([3, 16, 16], [[16, 64, 1, False, False, 3, 3], [32, 256, 1, True, False, 3, 3],
                           [64, 512, 2, True, True, 5, 3]]),
    "B0": ([3, 16, 16], [[16, 64, 1, False, False, 3, 3], [32, 256, 1, True, False, 3, 3],
                         [64, 512, 2, True, True, 5, 3], [128, 1024, 1, True, True, 5, 3]]),
    "B1": ([3, 24, 32], [[32, 64, 1, False, False, 3, 3], [48, 256, 1, True, False, 3, 3],
                         [96, 512, 2, True, True, 5, 3], [192, 1024, 1, True, True, 5, 3]]),
    "B2": ([3, 24, 32], [[32, 96, 1, False, False, 3, 4], [64, 384, 1, True, False, 3, 4],
                         [128, 768, 3, True, True, 5, 4], [256, 1536, 1, True, True, 5, 4]]),
    "B3": ([3, 24, 32], [[32, 128, 1, False, False, 3, 5], [64, 512, 1, True, False, 3, 5],
                         [128, 1024, 3, True, True, 5, 5], [256, 2048, 1, True, True, 5, 5]]),
    "B4": ([3, 32, 48], [[48, 128, 1, False, False, 3, 6], [96, 512, 1, True, False, 3, 6],
                         [192, 1024, 3, True, True, 5, 6], [384, 2048, 1, True, True, 5, 6]]),
    "B5": ([3, 32, 64], [[64, 128, 1, False, False, 3, 6], [128, 512, 2, True, False, 3, 6],
                         [256, 1024, 5, True, True, 5, 6], [512, 2048, 2, True, True, 5, 6]]),
    "B6": ([3, 48, 96], [[96, 192, 2, False, False, 3, 6], [192, 512, 3, True, False, 3, 6],
                         [384, 1024, 6, True, True, 5, 6], [768, 2048, 3, True, True, 5, 6]]),
}


class LearnableAffine(nn.Module):
    """y = scale * x + bias with two scalar parameters (PP-HGNetV2's learnable affine block);
    `inplace` (the deploy form) overwrites x where no gradient is taken through it."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))
        self.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a product then a sum, as the official: torch's addcmul with scalar tensors measured 2-3x slower
        if self.inplace and not (torch.is_grad_enabled() and (x.requires_grad or self.scale.requires_grad)):
            return x.mul_(self.scale).add_(self.bias)
        return x * self.scale + self.bias


class ConvBNAct(nn.Module):
    """Conv (no bias), BN, optional ReLU, and the learnable affine after the ReLU when use_lab."""

    def __init__(self, c1: int, c2: int, k: int, s: int = 1, g: int = 1, use_act: bool = True,
                 use_lab: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, padding=(k - 1) // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.ReLU() if use_act else nn.Identity()
        self.lab = LearnableAffine() if use_act and use_lab else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab(self.act(self.bn(self.conv(x))))

    def fold_bn(self):
        """Inference form beyond the official deploy: BN folded into the conv (eval statistics), the
        activation and affine then run in place on the conv's output."""
        act_in_place(self.act)
        act_in_place(self.lab)
        if not isinstance(self.bn, nn.Identity):
            self.conv, self.bn = fuse_conv_bn(self.conv, self.bn), nn.Identity()


class LightConvBNAct(nn.Module):
    """1x1 conv-BN (no activation) then a depthwise k x k conv-BN-ReLU."""

    def __init__(self, c1: int, c2: int, k: int, use_lab: bool = False):
        super().__init__()
        self.conv1 = ConvBNAct(c1, c2, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(c2, c2, k, g=c2, use_lab=use_lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class EffectiveSE(nn.Module):
    """ESE gate (CenterMask/VoVNetV2): global mean, one 1x1 conv with bias, sigmoid, rescale."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv(x.mean((2, 3), keepdim=True)).sigmoid()
        return torch.mul(x, gate)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with statistics and affine terms held as buffers: nothing to train, nothing counted
    as a parameter (as the official backbones freeze it)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, name).copy_(getattr(bn, name))
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # checkpoints of a trainable BN carry it
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below `module` by a FrozenBatchNorm2d with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d.from_batch_norm(child))
        else:
            freeze_batch_norms(child)
    return module


def apply_freezing(module: nn.Module, freeze: bool, freeze_norm: bool):
    """freeze: parameters stop training but still count; freeze_norm: BN -> FrozenBatchNorm2d."""
    if freeze:
        for p in module.parameters():
            p.requires_grad_(False)
    if freeze_norm:
        freeze_batch_norms(module)


def load_pretrained(module: nn.Module, path: str | Path, prefix_pattern: str, block: str):
    """Load the part of a local HGNetv2 checkpoint (e.g. PPHGNetV2_B0_stage1.pth, or a whole official
    detector's state dict) that fits `module`: among the key prefixes matching `prefix_pattern`
    (a regex such as r"stages\\.\\d+\\."), the one whose keys and shapes equal the module's own."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights not found: {path}", where=block,
                              hint="pass the local path of the HGNetv2 checkpoint (e.g. PPHGNetV2_B0_stage1.pth); "
                                   "nothing is downloaded")
    state, _ = model_weights(read_checkpoint(path), prefer_ema=False)
    own = {k: v.shape for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    groups = defaultdict(dict)
    pattern = re.compile(rf"^(?:backbone\.)?{prefix_pattern}")
    for key, value in state.items():
        match = pattern.match(key)
        if match and not key.endswith("num_batches_tracked"):
            groups[match.group(0)][key[match.end():]] = value
    fits = [p for p, sub in groups.items()
            if sub.keys() == own.keys() and all(sub[k].shape == own[k] for k in own)]
    if len(fits) != 1:
        found = ", ".join(sorted(groups)) or "none"
        raise CheckpointError(
            f"{path} has {'no' if not fits else 'several'} weights that fit this block "
            f"(prefixes tried: {found})", where=block,
            hint="use the HGNetv2 variant (B0..B6) the checkpoint was trained for")
    module.load_state_dict(groups[fits[0]], strict=False)
