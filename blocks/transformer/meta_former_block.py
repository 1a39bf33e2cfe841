"""MetaFormerBlock: MetaFormer Is Actually What You Need for Vision. CVPR 2022. https://arxiv.org/abs/2111.11418

x + ls1 * mixer(norm(x)), then x + ls2 * mlp(norm(x)) on channels-first maps (PoolFormer form:
GroupNorm(1) norms, 1x1-conv MLP, layer scale). `token_mixer` is any channel-keeping block given
as a nested `{module: Name, args: {...}}`; the default is PoolFormer's pooling mixer. MetaFormer is
the same block with the MLP nested too."""
from blocks.registry import register
from blocks.transformer.meta_former import MetaFormer


@register("transformer", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class MetaFormerBlock(MetaFormer):
    def __init__(self, c: int, token_mixer=None, mlp_ratio: float = 4.0, act: str = "gelu",
                 layer_scale_init: float = 1e-5):
        super().__init__(c, mixer=token_mixer, mlp_ratio=mlp_ratio, act=act, layer_scale_init=layer_scale_init)
