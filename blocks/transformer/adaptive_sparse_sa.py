"""AdaptiveSparseSA: Adapt or Perish: Adaptive Sparse Transformer with Attentive Feature Refinement for Image Restoration (AST). CVPR 2024. https://arxiv.org/abs/2404.02337

Window self-attention whose map mixes a dense softmax branch and a sparse squared-ReLU branch
with learned, softmax-normalised weights (ASSA); relative position bias per window. The map is
zero-padded to whole windows. Keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4, "win_size": 4},
                                                   "shape": (2, 32, 8, 8)})
class AdaptiveSparseSA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, win_size: int = 8, qkv_bias: bool = True):
        super().__init__()
        if c % num_heads:
            raise ArgumentError(f"channels {c} must split into {num_heads} heads")
        self.num_heads, self.win_size = num_heads, win_size
        self.scale = (c // num_heads) ** -0.5
        self.to_q = nn.Linear(c, c, bias=qkv_bias)
        self.to_kv = nn.Linear(c, 2 * c, bias=qkv_bias)
        self.proj = nn.Linear(c, c)
        self.branch_weights = nn.Parameter(torch.ones(2))   # softmax branch, squared-ReLU branch
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * win_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(win_size), torch.arange(win_size), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (win_size - 1)
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * win_size - 1) + relative[..., 1],
                             persistent=False)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """x: (windows, tokens, C)."""
        n, t, c = x.shape
        q = self.to_q(x).reshape(n, t, self.num_heads, -1).transpose(1, 2)
        k, v = self.to_kv(x).reshape(n, t, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(t, t, -1)
        logits = (q * self.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
        w_dense, w_sparse = self.branch_weights.softmax(0)
        attn = logits.softmax(-1) * w_dense + F.relu(logits) ** 2 * w_sparse
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.win_size
        x = F.pad(x, (0, (r - w % r) % r, 0, (r - h % r) % r))
        nh, nw = x.shape[2] // r, x.shape[3] // r
        windows = x.view(b, c, nh, r, nw, r).permute(0, 2, 4, 3, 5, 1).reshape(b * nh * nw, r * r, c)
        out = self._attend(windows).view(b, nh, nw, r, r, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, nh * r, nw * r)
        return out[:, :, :h, :w]
