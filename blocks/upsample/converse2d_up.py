from blocks.conv.converse2d import Converse2D
from blocks.registry import register


@register("upsample", channels="same", example={"args": [], "shape": (2, 16, 8, 8)})
class Converse2D_Up(Converse2D):
    """Converse2D_Up: Reverse Convolution and Its Applications to Image Restoration. ICCV 2025. https://arxiv.org/abs/2508.09824

    The converse operator as a learnable upsampler: the closed-form reverse convolution at scale s
    (2 by default) returns an s-times larger map; keeps channels.
    Compared with the authors' code (cszn/ConverseNet models/util_converse.py Converse2D, scale 2):
    max abs diff 2e-11 in float64 on (2, 16, 16, 16); 5e-3 in float32 on outputs of ~8, since the
    closed form divides by lambda ~ 1e-4 and so amplifies summation-order rounding.
    """

    def __init__(self, c: int, k: int = 3, scale: int = 2, padding: int = 2, padding_mode: str = "circular",
                 eps: float = 1e-5):
        """c: channels (kept). k: kernel size. scale: upsampling factor. padding, padding_mode, eps:
        as in Converse2D."""
        super().__init__(c, k, scale, padding, padding_mode, eps)
