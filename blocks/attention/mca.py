"""MCA: MCANet: Medical Image Segmentation with Multi-Scale Cross-Axis Attention. Machine Intelligence Research 2025. https://arxiv.org/abs/2312.08866

Multi-scale cross-axis attention: two normalised copies of the input go through summed strip convs
(k x 1 for one, 1 x k for the other, k = 7, 11, 21); queries of each axis attend to keys and values
of the other over the (channel x height) positions of every column, and the two results gate the
input through a sigmoid. Keeps channels.

Compared with the authors' code (the plug-in's attention/MCA.py): max abs diff 0 on (2, 16, 16, 16)."""
import torch
from torch import nn

from blocks.registry import ChannelError, register


def _columns(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, d, H, W) -> (B, heads, W, d * H): one row per image column."""
    return t.permute(0, 1, 4, 2, 3).flatten(3)


@register("attention", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 16, 16, 16)})
class MCA(nn.Module):
    def __init__(self, c: int, kernel_sizes=(7, 11, 21), num_heads: int = 8):
        """c: channels (divisible by num_heads). kernel_sizes: the strip convs summed on each axis."""
        super().__init__()
        if c % num_heads:
            raise ChannelError(f"MCA needs channels divisible by num_heads={num_heads}, got {c}",
                               hint="choose num_heads that divides the channels")
        self.num_heads = num_heads
        self.norm_h, self.norm_w = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
        self.strips_h = nn.ModuleList(nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0)) for k in kernel_sizes)
        self.strips_w = nn.ModuleList(nn.Conv2d(c, c, (1, k), padding=(0, k // 2)) for k in kernel_sizes)
        self.qkv_h, self.qkv_w = nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, 3 * c, 1)
        self.out_h, self.out_w = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)

    def _cross(self, query, key, value, shape):
        b, c, h, w = shape
        head_dim = c // self.num_heads
        # the authors' scale: head_dim * H^-1/2 (their expression binds the power to H only)
        attn = _columns(key).transpose(-2, -1) @ _columns(query) * (head_dim * h ** -0.5)   # (d H) x (d H)
        out = _columns(value) @ attn.transpose(-2, -1)
        return out.reshape(b, self.num_heads, w, head_dim, h).permute(0, 1, 3, 4, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x_h, x_w = self.norm_h(x), self.norm_w(x)
        heads = (b, self.num_heads, 3 * c // self.num_heads, h, w)
        q_h, k_h, v_h = self.qkv_h(sum(conv(x_h) for conv in self.strips_h)).reshape(heads).chunk(3, dim=2)
        q_w, k_w, v_w = self.qkv_w(sum(conv(x_w) for conv in self.strips_w)).reshape(heads).chunk(3, dim=2)
        out_w = self.out_w(self._cross(q_h, k_w, v_w, x.shape))
        out_h = self.out_h(self._cross(q_w, k_h, v_h, x.shape))
        return x * torch.sigmoid(out_w + out_h)
