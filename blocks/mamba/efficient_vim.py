"""EfficientVIM: EfficientViM: Efficient Vision Mamba with Hidden State Mixer based State Space Duality. CVPR 2025. https://arxiv.org/abs/2411.15241

The EfficientViM block: depth-wise 3x3 conv, HSM-SSD token mixer, depth-wise 3x3 conv and a 1x1 FFN,
each blended with its input by a learned per-channel gate sigmoid(alpha). HSM-SSD is the state space
duality form with softmax-normalised input-dependent A, read from a few hidden states: tokens are
projected into `state_dim` hidden states, the gated channel mixing runs on those states (cheap: N << L),
and the states are written back to every token. Keeps channels.
Compared with the authors' code (mlvlab/EfficientViM detection/efficientViM.py EfficientViMBlock, the
variant that takes non-square maps): max abs diff 3e-8 on (2, 32, 16, 16) and (2, 32, 12, 20)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


class HSMSSD(nn.Module):
    """Hidden state mixer based state space duality: tokens -> `state_dim` hidden states -> tokens."""

    def __init__(self, c: int, ssd_expand: float = 1.0, state_dim: int = 64, a_init_range=(1.0, 16.0)):
        super().__init__()
        self.state_dim, self.inner = state_dim, int(ssd_expand * c)
        self.a = nn.Parameter(torch.empty(state_dim).uniform_(*a_init_range))
        self.d = nn.Parameter(torch.ones(1))  # skip weight of the hidden states
        self.bcdt_proj = nn.Conv2d(c, 3 * state_dim, 1, bias=False)
        self.bcdt_dw = nn.Conv2d(3 * state_dim, 3 * state_dim, 3, 1, 1, groups=3 * state_dim, bias=False)
        # these two act on the (B, C, state_dim) hidden states, not on the map
        self.hz_proj = nn.Conv1d(c, 2 * self.inner, 1, bias=False)
        self.out_proj = nn.Conv1d(self.inner, c, 1, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        b, c, dt = self.bcdt_dw(self.bcdt_proj(x)).flatten(2).split(self.state_dim, 1)
        a = (dt + self.a.view(1, -1, 1)).softmax(-1)  # (B, N, L): how much each token writes to each state
        hidden = torch.matmul(x.flatten(2), (a * b).transpose(1, 2))  # (B, C, N)
        h, z = self.hz_proj(hidden).split(self.inner, 1)
        hidden = self.out_proj(h * self.act(z) + h * self.d)
        return torch.matmul(hidden, c).view(batch, -1, height, width)  # states read back by C


@register("mamba", channels="same", example={"kwargs": {"state_dim": 16}, "shape": (2, 32, 16, 16)})
class EfficientVIM(nn.Module):
    def __init__(self, c: int, mlp_ratio: float = 4.0, ssd_expand: float = 1.0, state_dim: int = 64):
        """c: channels; mlp_ratio: FFN hidden width / c; ssd_expand: HSM-SSD inner width / c;
        state_dim: number of hidden states (the paper's stages use 49, 25, 9)."""
        super().__init__()
        self.alpha = nn.Parameter(1e-4 * torch.ones(4, c))  # sigmoid(alpha) blends each of the 4 steps in
        self.mixer = HSMSSD(c, ssd_expand, state_dim)
        self.norm = LayerNorm2d(c)
        self.dwconv1 = Conv(c, c, 3, g=c, act=None)
        self.dwconv2 = Conv(c, c, 3, g=c, act=None)
        hidden = int(c * mlp_ratio)
        self.ffn = nn.Sequential(Conv(c, hidden, 1, act="relu"), Conv(hidden, c, 1, act=None))
        # the paper starts every residual branch at zero output (BN weight 0)
        for conv in (self.dwconv1, self.dwconv2, self.ffn[1]):
            nn.init.zeros_(conv.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.alpha).view(4, 1, -1, 1, 1)
        for step, branch in enumerate((self.dwconv1, lambda t: self.mixer(self.norm(t)), self.dwconv2, self.ffn)):
            x = (1 - alpha[step]) * x + alpha[step] * branch(x)
        return x
