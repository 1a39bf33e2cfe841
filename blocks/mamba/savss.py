"""SAVSS: SCSegamba: Lightweight Structure-Aware Vision Mamba for Crack Segmentation (structure-aware visual state space mixer). CVPR 2025. https://arxiv.org/abs/2503.01113

In-projection to x and gate z; a bottleneck conv (1x1 to a sixteenth, 3x3 depth-wise, 1x1 back) +
SiLU on x; then one selective scan along each of four structure-aware routes (SASS: row-wise and
column-wise snakes, and two diagonal zigzags), each route adding a learned per-direction offset to the
scan's input matrix B at every step; the four outputs, put back in raster order, are summed, gated by
SiLU(z) and projected. Token mixer on (B, C, H, W); keeps channels. This is SCSegamba's SAVSS_2D; the
gated bottleneck convs and PAF fusion around it in its SAVSS layer are not part of this block. Pure-
PyTorch scan on CPU (mamba_ssm's kernel on CUDA when installed).
As released, every route scans its reordered x with dt, B and C taken in raster order, and the dt
bias enters twice (in the projection and as the scan's delta bias); both kept. Departs
in one place: the released inverse of the first diagonal route maps every position to the last
token (an index slip), so that route's output was one vector broadcast; here it is the route's true
inverse.
Compared with the authors' code (Karl1109/SCSegamba mmcls/SAVSS_dev/models/SAVSS/SAVSS_layer.py,
SAVSS_2D with that inverse corrected, scan via mamba_ssm's selective_scan_ref): max abs diff 2e-9
on (2, 32, 8, 8) and (2, 32, 5, 7)."""
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.mamba._mamba import a_log_init, dt_proj
from blocks.mamba._scan import selective_scan
from blocks.registry import ChannelError, register

RIGHT, LEFT, UP, DOWN = 1, 2, 3, 4     # direction codes; 0 marks a route's first token


def _diagonal_zigzag(h: int, w: int, mirror: bool):
    order, moves = [], []
    for diag in range(h + w - 1):
        cells = [(i, diag - i) for i in range(min(diag + 1, h)) if diag - i < w] if diag % 2 == 0 else \
            [(diag - j, j) for j in range(min(diag + 1, w)) if diag - j < h]
        for i, j in cells:
            order.append(i * w + (w - 1 - j if mirror else j))
            # a diagonal is entered from its top row (even) or left column (odd) by a step right or down
            moves.append((RIGHT if i == 0 else DOWN) if diag % 2 == 0 else (DOWN if j == 0 else RIGHT))
    return order, moves


@functools.lru_cache(maxsize=16)
def sass_routes(h: int, w: int):
    """The four SASS routes of an h x w grid: (orders, directions), each (4, h*w) long tensors; orders[r][t] is
    the raster index of the route's t-th token, directions[r][t] the code of the step into it."""
    routes = []
    # 1: row snake from the bottom row upwards, ending at the top-left or top-right corner
    i, j, step = (h - 1, w - 1, LEFT) if h % 2 else (h - 1, 0, RIGHT)
    order, moves = [], []
    while i >= 0:
        order.append(i * w + j)
        if (step == RIGHT and j < w - 1) or (step == LEFT and j > 0):
            j += 1 if step == RIGHT else -1
            moves.append(step)
        else:
            i -= 1
            moves.append(UP)
            step = LEFT if step == RIGHT else RIGHT
    routes.append((order, moves))
    # 2: column snake from the top-left corner rightwards
    i, j, step = 0, 0, DOWN
    order, moves = [], []
    while j < w:
        order.append(i * w + j)
        if (step == DOWN and i < h - 1) or (step == UP and i > 0):
            i += 1 if step == DOWN else -1
            moves.append(step)
        else:
            j += 1
            moves.append(RIGHT)
            step = UP if step == DOWN else DOWN
    routes.append((order, moves))
    # 3, 4: diagonal zigzags from the top-left and (mirrored) the top-right corner
    routes += [_diagonal_zigzag(h, w, False), _diagonal_zigzag(h, w, True)]
    orders = torch.tensor([order for order, _ in routes])
    directions = torch.tensor([[0] + moves[:-1] for _, moves in routes])
    return orders, directions


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4}, "shape": (2, 32, 8, 8)})
class SAVSS(nn.Module):
    def __init__(self, c: int, d_state: int = 16, expand: float = 2, bias: bool = False,
                 layer_scale_init: float | None = None):
        """c: at least 8 (the bottleneck conv is expand * c / 16 wide); layer_scale_init: optional
        per-channel output scale (SCSegamba's init_layer_scale, off by default)."""
        super().__init__()
        inner = int(expand * c)
        if inner < 16:
            raise ChannelError(f"SAVSS's bottleneck conv is {inner} / 16 wide; use at least {math.ceil(16 / expand)} channels")
        self.d_state, self.dt_rank = d_state, math.ceil(c / 16)
        self.in_proj = nn.Linear(c, 2 * inner, bias=bias)
        self.conv2d = nn.Sequential(nn.Conv2d(inner, inner // 16, 1), nn.Conv2d(inner // 16, inner // 16, 3, padding=1,
                                                                              groups=inner // 16, bias=False),
                                    nn.Conv2d(inner // 16, inner, 1, bias=False))
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = dt_proj(self.dt_rank, inner)
        self.A_log = nn.Parameter(a_log_init(inner, d_state))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, c, bias=bias)
        self.direction_Bs = nn.Parameter(nn.init.trunc_normal_(torch.zeros(5, d_state), std=0.02))
        self.gamma = None if layer_scale_init is None else nn.Parameter(layer_scale_init * torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        length = h * w
        x, z = self.in_proj(x.flatten(2).transpose(1, 2)).chunk(2, -1)             # (B, L, inner)
        inner = x.shape[-1]
        x = F.silu(self.conv2d(x.transpose(1, 2).reshape(b, inner, h, w))).flatten(2)  # (B, inner, L)
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = self.dt_proj(dt).transpose(1, 2)          # bias here and again as the scan's delta bias, as released
        orders, directions = (t.to(x.device) for t in sass_routes(h, w))
        routes = x[:, :, orders].transpose(1, 2).reshape(b, 4 * inner, length)         # (B, 4*inner, L)
        route_B = B.transpose(1, 2)[:, None] + self.direction_Bs[directions].transpose(1, 2)[None]  # (B, 4, N, L)
        route_C = C.transpose(1, 2)[:, None].expand(-1, 4, -1, -1)
        y = selective_scan(routes.float(), dt.repeat(1, 4, 1).float(), -torch.exp(self.A_log.float()).repeat(4, 1),
                           route_B.float(), route_C.float(), self.D.float().repeat(4), self.dt_proj.bias.float().repeat(4))
        y = y.view(b, 4, inner, length)
        inverse = torch.argsort(orders, -1)
        y = sum(y[:, r, :, inverse[r]] for r in range(4)).transpose(1, 2).to(z.dtype)  # (B, L, inner)
        out = self.out_proj(y * F.silu(z))
        if self.gamma is not None:
            out = out * self.gamma
        return out.transpose(1, 2).reshape(b, c, h, w)
