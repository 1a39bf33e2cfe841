"""PolaLinearAttention: PolaFormer: Polarity-aware Linear Attention for Vision Transformers. ICLR 2025. https://arxiv.org/abs/2501.15061

Linear attention that keeps same-signed (q+k+, q-k-) and opposite-signed (q+k-, q-k+) query-key
interactions in two value halves, sharpened by a learnable power, plus a depth-wise conv on V and
a multiplicative gate. Token mixer on (B, C, H, W); keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4, "hw": [8, 8]},
                                                   "shape": (2, 32, 8, 8)})
class PolaLinearAttention(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, hw=(20, 20), qkv_bias: bool = False, sr_ratio: int = 1,
                 kernel_size: int = 5, alpha: float = 4.0):
        super().__init__()
        if c % num_heads or (c // num_heads) % 2:
            raise ArgumentError(f"channels {c} must split into {num_heads} heads of even width")
        self.num_heads, self.head_dim, self.alpha, self.sr_ratio = num_heads, c // num_heads, alpha, sr_ratio
        self.qg = nn.Linear(c, 2 * c, bias=qkv_bias)   # query and gate
        self.kv = nn.Linear(c, 2 * c, bias=qkv_bias)
        self.proj = nn.Linear(c, c)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(c, c, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(c)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim)
        self.power = nn.Parameter(torch.zeros(1, num_heads, 1, self.head_dim))
        self.scale = nn.Parameter(torch.zeros(1, 1, c))
        # learned for the training size of the keys; resized bilinearly for other sizes
        self.positional_encoding = nn.Parameter(torch.zeros(1, c, hw[0] // sr_ratio, hw[1] // sr_ratio))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q, g = self.qg(tokens).chunk(2, -1)
        if self.sr_ratio > 1:
            reduced = self.sr(x)
            kh, kw = reduced.shape[2:]
            k, v = self.kv(self.norm(reduced.flatten(2).transpose(1, 2))).chunk(2, -1)
        else:
            kh, kw = h, w
            k, v = self.kv(tokens).chunk(2, -1)
        pos = self.positional_encoding
        if pos.shape[2:] != (kh, kw):
            pos = F.interpolate(pos, size=(kh, kw), mode="bilinear", align_corners=False)
        k = k + pos.flatten(2).transpose(1, 2)
        scale = F.softplus(self.scale)
        power = 1 + self.alpha * torch.sigmoid(self.power)
        q, k, v = self._heads(q / scale), self._heads(k / scale), self._heads(v)
        n = k.shape[2]
        q_pos, q_neg = F.relu(q) ** power, F.relu(-q) ** power
        k_pos, k_neg = F.relu(k) ** power, F.relu(-k) ** power
        keys = torch.cat((k_pos, k_neg), -1)
        key_mean = keys.mean(2, keepdim=True).transpose(-2, -1)
        outputs = []
        for query, value in ((torch.cat((q_pos, q_neg), -1), v[..., :self.head_dim // 2]),    # same sign
                             (torch.cat((q_neg, q_pos), -1), v[..., self.head_dim // 2:])):   # opposite sign
            normaliser = 1 / (query @ key_mean + 1e-6)
            context = (keys.transpose(-2, -1) * n ** -0.5) @ (value * n ** -0.5)
            outputs.append(query @ context * normaliser)
        out = torch.cat(outputs, -1).transpose(1, 2).reshape(b, h * w, c)
        v_map = v.transpose(-2, -1).reshape(b * self.num_heads, self.head_dim, kh, kw)
        if (kh, kw) != (h, w):
            v_map = F.interpolate(v_map, size=(h, w), mode="bilinear", align_corners=False)
        out = out + self.dwc(v_map).reshape(b, c, h * w).transpose(1, 2)
        out = self.proj(out * g)
        return out.transpose(1, 2).reshape(b, c, h, w)
