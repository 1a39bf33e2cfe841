"""DFFN: Efficient Frequency Domain-based Transformers for High-Quality Image Deblurring (FFTformer's discriminative FFN). CVPR 2023. https://arxiv.org/abs/2211.12250

Restormer's gated-dconv FFN with a learnable filter on the spectrum of every 8x8 patch of the expanded
features, deciding which frequencies pass; keeps channels. (This is FFTformer's DFFN, not Restormer's GDFN.)"""
from blocks.mlp._gated_dconv import GatedDConvFFN
from blocks.registry import register


@register("mlp", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class DFFN(GatedDConvFFN):
    def __init__(self, c: int, ffn_expansion_factor: float = 3, bias: bool = False, patch_size: int = 8):
        super().__init__(c, ffn_expansion_factor, bias, fft_at="hidden", patch_size=patch_size)
