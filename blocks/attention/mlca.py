"""MLCA: Mixed Local Channel Attention for Object Detection. Eng. Appl. Artif. Intell. 2023. https://doi.org/10.1016/j.engappai.2023.106442

ECA-style 1-D convs over a local (k x k pooled) and a global channel descriptor, sigmoid, mixed by
`local_weight` and un-pooled back to the input size; keeps channels. The global gate is kept per
sample (the authors' released code mixes it across the batch, a bug fixed in later copies)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.attention.eca import eca_kernel_size
from blocks.registry import register


@register("attention", channels="same", example={"args": [], "shape": (2, 64, 16, 16)})
class MLCA(nn.Module):
    def __init__(self, c: int, local_size: int = 5, gamma: int = 2, b: int = 1, local_weight: float = 0.5):
        super().__init__()
        k = eca_kernel_size(c, gamma, b)
        self.local_size = local_size
        self.local_weight = local_weight
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.conv_local = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.local_pool = nn.AdaptiveAvgPool2d(local_size)
        self.global_pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.local_size
        local = self.local_pool(x)
        glob = self.global_pool(local)
        # as in the paper's code, the local descriptor is one sequence, position-major, channels within
        seq_local = local.flatten(2).transpose(1, 2).reshape(b, 1, s * s * c)
        att_local = self.conv_local(seq_local).reshape(b, s * s, c).transpose(1, 2).reshape(b, c, s, s).sigmoid()
        att_global = self.conv(glob.reshape(b, 1, c)).reshape(b, c, 1, 1).sigmoid()
        att = att_global * (1 - self.local_weight) + att_local * self.local_weight
        return x * F.adaptive_avg_pool2d(att, (h, w))
