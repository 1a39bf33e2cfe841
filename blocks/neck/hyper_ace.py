"""HyperACE: YOLOv13: Real-Time Object Detection with Hypergraph-Enhanced Adaptive Visual Perception. arXiv 2025. https://arxiv.org/abs/2506.17733

Hypergraph-based adaptive correlation enhancement: three levels [fine, middle, coarse] are brought
to the middle one's size (2x2 average pool, nearest 2x upsampling), concatenated and fused by a 1x1
Conv; a 1x1 Conv splits the result in three: the middle part feeds two adaptive-hypergraph branches
(C3AH: learned hyperedge prototypes from the global mean and max context, soft vertex-edge
participation, edge and vertex projections), the last part a chain of depth-wise separable C3k
blocks (the low-order branch); everything is concatenated and mixed by a 1x1 Conv to `c2`.

Compared with the authors' code (the plug-in's neck_module/HyperACE.py, YOLOv13's HyperACE): max abs
diff 6e-8 on [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)] with c2 = 64, for dsc3k on and off (eval mode: the
hyperedge generator's dropout is active in training). The fusion conv takes all input channels, so
YOLOv13's channel_adjust option (4 x c instead of 3 x c concatenated) follows from the inputs."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.neck._csp import C3k
from blocks.registry import ChannelError, register

_HEAD_WIDTH = 16   # C3AH runs one hyperedge-similarity head per 16 channels


class _DSConv(nn.Module):
    """YOLOv13's depth-wise separable conv: depth-wise k x k, 1x1 (both bias-free), BN, SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 3, d: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(c1, c1, k, 1, d * (k - 1) // 2, dilation=d, groups=c1, bias=False)
        self.pw = nn.Conv2d(c1, c2, 1, bias=False)
        self.norm = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.pw(self.dw(x))))


class _DSBottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, k1: int = 3, k2: int = 5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = _DSConv(c1, hidden, k1)
        self.cv2 = _DSConv(hidden, c2, k2)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class _AdaptiveHypergraph(nn.Module):
    """AdaHGComputation: tokens of a (B, C, H, W) map through one adaptive hypergraph convolution."""

    def __init__(self, dim: int, num_hyperedges: int, num_heads: int, dropout: float = 0.1, context: str = "both"):
        super().__init__()
        if context not in ("mean", "max", "both"):
            raise ArgumentError(f"HyperACE context must be 'mean', 'max' or 'both', got {context!r}")
        self.num_heads, self.num_hyperedges, self.context = num_heads, num_hyperedges, context
        self.prototypes = nn.Parameter(torch.empty(num_hyperedges, dim))
        nn.init.xavier_uniform_(self.prototypes)
        self.context_net = nn.Linear(2 * dim if context == "both" else dim, num_hyperedges * dim)
        self.pre_head_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.edge_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.node_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())

    def participation(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, E): each hyperedge's softmax over the vertices."""
        b, n, d = tokens.shape
        pooled = {"mean": tokens.mean(1), "max": tokens.amax(1)}
        context = torch.cat((pooled["mean"], pooled["max"]), -1) if self.context == "both" else pooled[self.context]
        prototypes = self.prototypes + self.context_net(context).reshape(b, self.num_hyperedges, d)
        heads = self.pre_head_proj(tokens).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        proto_heads = prototypes.reshape(b, self.num_hyperedges, self.num_heads, -1).transpose(1, 2)
        logits = (heads @ proto_heads.transpose(-2, -1) / math.sqrt(d // self.num_heads)).mean(1)
        return self.dropout(logits).softmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        a = self.participation(tokens)
        edges = self.edge_proj(a.transpose(1, 2) @ tokens)
        tokens = self.node_proj(a @ edges) + tokens
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class _C3AH(nn.Module):
    """CSP split: one 1x1 Conv path through the adaptive hypergraph, one plain, then a 1x1 Conv."""

    def __init__(self, c1: int, c2: int, e: float, num_hyperedges: int, context: str):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(c1, hidden, 1)
        self.m = _AdaptiveHypergraph(hidden, num_hyperedges, hidden // _HEAD_WIDTH, context=context)
        self.cv3 = Conv(2 * hidden, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


@register("neck", channels="arg0", repeat_arg="n",
          example={"args": [64], "shapes": [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)]})
class HyperACE(nn.Module):
    def __init__(self, c_in: list, c2: int, n: int = 1, num_hyperedges: int = 8, dsc3k: bool = True,
                 shortcut: bool = False, e1: float = 0.5, e2: float = 1.0, context: str = "both"):
        """c_in: [fine, middle, coarse] channels (strides s/2, s, 2s). c2: output channels.
        n: low-order blocks. num_hyperedges: hyperedges per C3AH branch. dsc3k: DSC3k (two
        bottlenecks) rather than one DS bottleneck per low-order block. shortcut: residuals in them.
        e1: hidden width over c2 (the hypergraph width int(c2 * e1 * e2) must be a multiple of 16).
        context: the hyperedge prototypes' global context ('mean', 'max' or 'both')."""
        super().__init__()
        if len(c_in) != 3:
            raise ArgumentError(f"HyperACE fuses three levels [fine, middle, coarse], got {len(c_in)}")
        self.c = int(c2 * e1)
        if int(self.c * e2) % _HEAD_WIDTH or int(self.c * e2) == 0:
            raise ChannelError(f"HyperACE's hypergraph width int(c2 * e1 * e2) = {int(self.c * e2)} must be a "
                               f"multiple of {_HEAD_WIDTH}", hint="e.g. c2 = 64 or 128 with e1 = 0.5")
        self.cv1 = Conv(c_in[1], 3 * self.c, 1)
        self.cv2 = Conv((4 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(self._low_order(dsc3k, shortcut) for _ in range(n))
        self.fuse = Conv(sum(c_in), c_in[1], 1)
        self.branch1 = _C3AH(self.c, self.c, e2, num_hyperedges, context)
        self.branch2 = _C3AH(self.c, self.c, e2, num_hyperedges, context)

    def _low_order(self, dsc3k: bool, shortcut: bool) -> nn.Module:
        if dsc3k:
            return C3k(self.c, self.c, 2, shortcut, block=lambda c: _DSBottleneck(c, c, shortcut, e=1.0, k1=3, k2=7))
        return _DSBottleneck(self.c, self.c, shortcut)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        fine, middle, coarse = xs
        x = self.fuse(torch.cat((F.avg_pool2d(fine, 2), middle, F.interpolate(coarse, scale_factor=2.0)), 1))
        y = list(self.cv1(x).chunk(3, 1))
        high1, high2 = self.branch1(y[1]), self.branch2(y[1])
        for block in self.m:
            y.append(block(y[-1]))
        y[1] = high1
        y.append(high2)
        return self.cv2(torch.cat(y, 1))
