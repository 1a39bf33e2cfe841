"""GDFN: Restormer: Efficient Transformer for High-Resolution Image Restoration (gated-Dconv feed-forward network). CVPR 2022. https://arxiv.org/abs/2111.09881

1x1 expansion to two halves, 3x3 depth-wise conv, GELU(one) * other, 1x1 projection; keeps channels."""
from blocks.mlp._gated_dconv import GatedDConvFFN
from blocks.registry import register


@register("mlp", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class GDFN(GatedDConvFFN):
    def __init__(self, c: int, ffn_expansion_factor: float = 2.66, bias: bool = False):
        super().__init__(c, ffn_expansion_factor, bias)
