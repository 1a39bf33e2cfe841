"""EDFFN: Efficient Visual State Space Model for Image Deblurring (EVSSM's efficient DFFN). CVPR 2025. https://arxiv.org/abs/2405.14343

FFTformer's DFFN with the 8x8-patch spectral filter moved from the expanded features to the block's
output (C channels instead of 2 x hidden), which cuts its cost; keeps channels."""
from blocks.mlp._gated_dconv import GatedDConvFFN
from blocks.registry import register


@register("mlp", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class EDFFN(GatedDConvFFN):
    def __init__(self, c: int, ffn_expansion_factor: float = 3, bias: bool = False, patch_size: int = 8):
        super().__init__(c, ffn_expansion_factor, bias, fft_at="output", patch_size=patch_size)
