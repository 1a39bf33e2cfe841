"""PConv: Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks. CVPR 2023. https://arxiv.org/abs/2303.03667

FasterNet's partial convolution as a stand-alone row: a 3x3 conv over the first 1/n_div of the
channels, the rest passed through untouched. Keeps channels."""
from blocks.backbone.faster_block import PartialConv
from blocks.registry import register


@register("conv", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class PConv(PartialConv):
    pass
