import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register


@register("conv", channels="same", example={"args": [8, 7], "shape": (2, 16, 16, 16)})
class ConvAttn(nn.Module):
    """ConvAttn: ESC: Emulating Self-attention with Convolution for Efficient Image Super-Resolution. ICCV 2025. https://arxiv.org/abs/2503.06671

    Convolutional attention: the first `pdim` channels get a static large-kernel conv (a dense
    pdim -> pdim k x k filter) plus a per-image 3x3 depth-wise kernel predicted from their global
    average; the rest pass unchanged; a 1x1 conv then mixes all channels. Keeps channels.
    Compared with the authors' code (dslisleedh/ESC esc/archs/esc_arch.py ConvAttnWrapper, with its
    shared lk_filter passed in, training-mode path; pdim 8, k 7): max abs diff 0 on (2, 16, 16, 16).
    """

    def __init__(self, c: int, pdim: int = 16, k: int = 13):
        """c: channels (kept). pdim: channels the attention part works on (16 in ESC). k: size of the
        static large kernel (13 in ESC). In ESC one large kernel is shared by all blocks of a stage;
        here each block owns its kernel."""
        super().__init__()
        if not 2 <= pdim <= c:
            raise ChannelError(f"ConvAttn needs 2 <= pdim <= channels, got pdim={pdim} for {c} channels",
                               hint="lower pdim")
        self.pdim, self.small = pdim, 3
        self.lk_filter = nn.Parameter(nn.init.orthogonal_(torch.empty(pdim, pdim, k, k)))
        self.dwc_proj = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(pdim, pdim // 2, 1), nn.GELU(),
                                      nn.Conv2d(pdim // 2, pdim * self.small ** 2, 1))
        # the dynamic kernel starts at zero, so the block starts as the static large-kernel conv
        nn.init.zeros_(self.dwc_proj[-1].weight)
        nn.init.zeros_(self.dwc_proj[-1].bias)
        self.aggr = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part, rest = torch.split(x, [self.pdim, x.shape[1] - self.pdim], dim=1)
        b, c, h, w = part.shape
        dynamic = self.dwc_proj(part).reshape(b * c, 1, self.small, self.small)
        local = F.conv2d(part.reshape(1, b * c, h, w), dynamic, padding=self.small // 2, groups=b * c)
        part = F.conv2d(part, self.lk_filter, padding=self.lk_filter.shape[-1] // 2) + local.reshape(b, c, h, w)
        return self.aggr(torch.cat((part, rest), dim=1))
