"""nnWNet: nnWNet: Rethinking the Use of Transformers in Biomedical Image Segmentation and Calling for a Unified Evaluation Benchmark. CVPR 2025. https://openaccess.thecvf.com/content/CVPR2025/html/Zhou_nnWNet_Rethinking_the_Use_of_Transformers_in_Biomedical_Image_Segmentation_CVPR_2025_paper.html

nnWNet's global block, the piece of its Global Scope Bridges that carries global features between the
two U-paths of the W: a 3x3 conv projection (c1 -> c2), then a PoolFormer-style MetaFormer block on c2
(GroupNorm(1), average pooling minus the input as the token mixer, a 1x1-conv GELU MLP of ratio 4, both
with residuals, no layer scale). Registered under the DEIM plug-in guide's name "nnWNet": the guide's
file (module/nnWNet.py) holds this block (GlobalBlock) beside nnWNet's local residual block (LocalBlock)
and its overlapping patch embedding (OPE), plain conv stacks; this is the one that carries the paper's
idea. c1 -> c2 (rule "arg0").
Compared with the authors' code (Yanfeng-Zhou/nnWNet nnUNetTrainer_WNet3D.py global_block; their 2-D
trainer, which their README names, is not in the stored snapshot): run on a depth-3 copy of the input
with the projection kernel non-zero only in its middle depth slice, their middle output slice equals
ours, max abs diff 3e-6 on outputs up to 17 in float32 (4e-15 in float64), on (2, 16, 16, 16) and
(2, 16, 9, 13) -> 32. With groups=4 it equals the plug-in's GlobalBlock (max abs diff 0).
Departs: none from the released code (3-D convs and pools become 2-D; their guard for depths under the
pool size has no 2-D counterpart). Their README describes the 2-D bridges' mixer as an 11x11
depth-wise convolution; the released code, the plug-in and this block pool."""
import functools

import torch
from torch import nn

from blocks.registry import ChannelError, register
from blocks.transformer.meta_former import MetaFormer, Pooling


@register("backbone", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class nnWNet(nn.Module):  # noqa: N801 (the name users know from the plug-in guide)
    def __init__(self, c1: int, c2: int, pool_size: int = 3, mlp_ratio: float = 4.0, groups: int = 1):
        """c1, c2: input and output channels; pool_size: the pooling mixer's window; mlp_ratio: MLP width / c2;
        groups: groups of the 3x3 projection (the authors' 1; the DEIM plug-in's GlobalBlock uses 4)."""
        super().__init__()
        if c1 % groups or c2 % groups:
            raise ChannelError(f"nnWNet's projection needs c1 and c2 divisible by groups={groups}, got {c1} -> {c2}")
        self.proj = nn.Conv2d(c1, c2, 3, padding=1, groups=groups)
        self.block = MetaFormer(c2, mixer=functools.partial(Pooling, pool_size=pool_size), mlp_ratio=mlp_ratio,
                                norm="group", layer_scale_init=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.proj(x))
