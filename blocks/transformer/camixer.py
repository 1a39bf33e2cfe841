"""CAMixer: CAMixerSR: Only Details Need More "Attention". CVPR 2024. https://arxiv.org/abs/2402.19289

The CAMixerSR block: the content-aware mixer, then a gated depth-wise FFN, each added to its input
and followed by LayerNorm (post-norm). The mixer predicts, from the values and a window position
grid, per-window "hard or easy" scores, offsets, channel and spatial attention; hard windows get
window self-attention (queries from x, keys from x plus x warped by the predicted offsets), easy ones
only the spatially-attended values; then depth-wise 3x3 and dilated 3x3 convs gated by the channel
attention and a 1x1 projection. Keeps channels.
Departures: the 2-channel global condition, which CAMixerSR computes once from its shallow features,
comes from each block's own input; maps are zero-padded to whole windows and cropped back; training uses the authors'
straight-through Gumbel mask, inference the noise-free argmax of the predictor (the authors' inference
draws a Gumbel sample to set how many windows stay hard, so its outputs are random); the mask ratio
loss of CAMixerSR is not applied (the block returns only its features).
FLOPs: the counter does not see the offset warp (grid_sample); it counts attention over every window
(the masked training form), so it is an upper bound for the authors' sparse inference.
Compared with the authors' code (icandle/CAMixerSR codes/basicsr/archs/CAMixerSR_arch.py Block in
train_mode with the same Gumbel draw and global condition, basicsr's flow_warp): max abs diff 2e-6 on (2, 32, 16, 16)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample x at (pixel + flow) bilinearly, border padding; flow is (B, H, W, 2) in pixels (x, y)."""
    _, _, height, width = x.shape
    grid_y, grid_x = torch.meshgrid(torch.arange(height, device=x.device, dtype=x.dtype),
                                    torch.arange(width, device=x.device, dtype=x.dtype), indexing="ij")
    grid = torch.stack((grid_x, grid_y), 2) + flow
    grid = torch.stack((2.0 * grid[..., 0] / max(width - 1, 1) - 1.0, 2.0 * grid[..., 1] / max(height - 1, 1) - 1.0), dim=3)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, windows, window * window * C), window cells outer, channels inner."""
    batch, c, height, width = x.shape
    x = x.reshape(batch, c, height // window, window, width // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // window) * (width // window), -1)


def from_windows(x: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    batch = x.shape[0]
    x = x.reshape(batch, height // window, width // window, window, window, -1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, -1, height, width)


class WindowPredictor(nn.Module):
    """Per-window hard/easy scores, pixel offsets, channel and spatial attention from the condition."""

    def __init__(self, c: int, window: int, k: int = 4):
        super().__init__()
        cdim = c + k
        self.in_conv = nn.Sequential(nn.Conv2d(cdim, cdim // 4, 1), LayerNorm2d(cdim // 4, eps=1e-6), nn.LeakyReLU(0.1))
        self.out_offsets = nn.Sequential(nn.Conv2d(cdim // 4, cdim // 8, 1), nn.LeakyReLU(0.1), nn.Conv2d(cdim // 8, 2, 1))
        self.out_mask = nn.Sequential(nn.Linear(window ** 2, window), nn.LeakyReLU(0.1), nn.Linear(window, 2), nn.Softmax(dim=-1))
        self.out_ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cdim // 4, c, 1), nn.Sigmoid())
        self.out_sa = nn.Sequential(nn.Conv2d(cdim // 4, 1, 3, 1, 1), nn.Sigmoid())
        self.window = window

    def forward(self, condition: torch.Tensor):
        x = self.in_conv(condition)
        offsets = self.out_offsets(x).tanh() * 8.0
        score = self.out_mask(to_windows(x.mean(dim=1, keepdim=True), self.window))
        if self.training:
            mask = F.gumbel_softmax(score, hard=True, dim=2)[:, :, :1]
        else:
            mask = (score[:, :, :1] >= score[:, :, 1:]).to(score.dtype)
        return mask, offsets, self.out_ca(x), self.out_sa(x)


class ContentAwareMixer(nn.Module):
    def __init__(self, c: int, window: int = 8):
        super().__init__()
        self.window = window
        self.project_v = nn.Conv2d(c, c, 1)
        self.project_q = nn.Linear(c, c)
        self.project_k = nn.Linear(c, c)
        self.conv_spatial = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 3, padding=2, groups=c, dilation=2))
        self.project_out = nn.Conv2d(c, c, 1)
        self.act = nn.GELU()
        self.route = WindowPredictor(c, window)

    def forward(self, x: torch.Tensor, condition_global: torch.Tensor) -> torch.Tensor:
        batch, c, height, width = x.shape
        win = self.window
        v = self.project_v(x)
        axis = torch.linspace(-1, 1, win, device=x.device, dtype=x.dtype)
        cell = torch.stack(torch.meshgrid(axis, axis, indexing="ij"))[None]
        condition = torch.cat([v, condition_global, cell.repeat(batch, 1, height // win, width // win)], 1)
        mask, offsets, ca, sa = self.route(condition)
        k = x + flow_warp(x, offsets.permute(0, 2, 3, 1))
        qk = to_windows(torch.cat([x, k], 1), win) * mask  # easy windows: q = k = 0, so attention adds 0
        windows = qk.shape[1]
        q, k = qk.reshape(batch, windows * win * win, 2 * c).chunk(2, dim=2)
        q = self.project_q(q).reshape(batch * windows, win * win, c)
        k = self.project_k(k).reshape(batch * windows, win * win, c)
        v1 = (to_windows(v, win) * mask).reshape(batch * windows, win * win, c)
        attended = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-2, -1)), dim=-1), v1)
        out = attended.reshape(batch, windows, -1) + to_windows(v * sa, win) * (1 - mask)
        out = from_windows(out, win, height, width)
        return self.project_out(self.act(self.conv_spatial(out)) * ca + out)


@register("transformer", channels="same", example={"kwargs": {"window_size": 4}, "shape": (2, 32, 16, 16)})
class CAMixer(nn.Module):
    def __init__(self, c: int, window_size: int = 8):
        """c: channels; window_size: attention window side (maps are padded to a multiple of it)."""
        super().__init__()
        self.window_size = window_size
        self.global_predictor = nn.Sequential(nn.Conv2d(c, 8, 1), nn.LeakyReLU(0.1), nn.Conv2d(8, 2, 3, 1, 1), nn.LeakyReLU(0.1))
        self.mixer = ContentAwareMixer(c, window_size)
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.ffn_in = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.ffn_dw = nn.Conv2d(2 * c, 2 * c, 3, 1, 1, groups=2 * c, bias=False)
        self.ffn_out = nn.Conv2d(c, c, 1, bias=False)
        self.norm2 = LayerNorm2d(c, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        pad_h, pad_w = (-height) % self.window_size, (-width) % self.window_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.norm1(x + self.mixer(x, self.global_predictor(x)))
        gate, value = self.ffn_dw(self.ffn_in(x)).chunk(2, dim=1)
        x = self.norm2(x + self.ffn_out(F.gelu(gate) * value))
        return x[:, :, :height, :width]
