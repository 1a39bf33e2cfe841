"""DFFN_IJCAI: FreqFormer: Frequency-aware Transformer for Lightweight Image Super-resolution (dual frequency aggregation FFN). IJCAI 2024. https://www.ijcai.org/proceedings/2024/81

1x1 expansion + GELU, then a frequency gate: one half of the hidden channels times the other half
passed through LayerNorm, 1x1 and 3x3 depth-wise convs; 1x1 projection from the half back. Keeps
channels. The DEIM plug-in project lists this as DFFN (IJCAI 2024); in this zoo DFFN is FFTformer's
discriminative frequency FFN (CVPR 2023), a different module, hence the venue suffix here.
Compared with the authors' code (JPWang-CS/FreqFormer basicsr/archs/freqformer_arch.py, DFFN):
max abs diff 4e-15 on (2, 32, 8, 8) in float64, random weights."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import ChannelError, register


@register("mlp", channels="same", name="DFFN_IJCAI", example={"args": [], "shape": (2, 32, 8, 8)})
class DualFrequencyFFN(nn.Module):
    def __init__(self, c: int, expansion_factor: float = 2.0):
        """expansion_factor: hidden width / c (FreqFormer's released models use 2); the hidden width must be even."""
        super().__init__()
        hidden = int(c * expansion_factor)
        if hidden % 2:
            raise ChannelError(f"DFFN_IJCAI splits its hidden width in two; {c} x {expansion_factor} = {hidden} is odd")
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.gate_norm = LayerNorm2d(hidden // 2)
        self.gate_conv = nn.Sequential(nn.Conv2d(hidden // 2, hidden // 2, 1),
                                       nn.Conv2d(hidden // 2, hidden // 2, 3, padding=1, groups=hidden // 2))
        self.fc2 = nn.Conv2d(hidden // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = F.gelu(self.fc1(x)).chunk(2, 1)
        return self.fc2(x1 * self.gate_conv(self.gate_norm(x2)))
