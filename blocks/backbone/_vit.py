"""Plain ViT encoders with 2-D RoPE used by DEIMv2's DINOv3STAs backbone: DEIMv2's ViT-Tiny / ViT-Tiny+
(distilled from DINOv3) and DINOv3's ViT-S/16 and ViT-S+/16 (DINOv3, arXiv 2025, https://arxiv.org/abs/2508.10104);
also DINOv3's ViT-B/16, RT-DETRv4's foundation teacher (engine/distill.py).

Module and parameter names follow the official checkpoints (Meta's layout: `storage_tokens`,
`ls1.gamma`, `mask_token`, `rope_embed.periods`, `qkv.bias_mask`), so `vitt_distill.pt` loads into
`ViTTiny._model` and `dinov3_vit{s16,s16plus,b16}_pretrain_lvd1689m-*.pth` into `DINOv3ViT` as they are."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from core.errors import ArgumentError

# name: embed_dim, num_heads, ffn ("mlp" ratio 4 or "swiglu" ratio 6); all are 12 blocks of patch 16
DINOV3_ARCHS = {"dinov3_vits16": (384, 6, "mlp"), "dinov3_vits16plus": (384, 6, "swiglu"),
                "dinov3_vitb16": (768, 12, "mlp")}


class RopePositionEmbedding(nn.Module):
    """2-D rotary embedding: per head-dim quarter a period base^(2i/(D/2)); coordinates are patch
    centres in [-1, 1] per axis; in training `rescale_coords` scales them by a log-uniform factor."""

    def __init__(self, embed_dim: int, num_heads: int, base: float = 100.0, rescale_coords: float | None = None):
        super().__init__()
        head_dim = embed_dim // num_heads
        if head_dim % 4:
            raise ArgumentError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
        self.rescale_coords = rescale_coords
        self.register_buffer("periods", base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)))

    def forward(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        device = self.periods.device
        coords_h = torch.arange(0.5, height, device=device, dtype=torch.float32) / height
        coords_w = torch.arange(0.5, width, device=device, dtype=torch.float32) / width
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1) * 2.0 - 1.0
        if self.training and self.rescale_coords is not None:
            bound = math.log(self.rescale_coords)
            coords = coords * torch.empty(1, device=device).uniform_(-bound, bound).exp()
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


def _rotate(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class MaskedKBiasLinear(nn.Linear):
    """The qkv linear of DINOv3: the key third of its bias is multiplied by `bias_mask` (0 there)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        mask = torch.ones(out_features)
        mask[out_features // 3: 2 * out_features // 3] = 0
        self.register_buffer("bias_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask.to(self.bias.dtype))


class Attention(nn.Module):
    """Multi-head self-attention; RoPE rotates q and k of the patch tokens (not the leading cls/register tokens)."""

    def __init__(self, dim: int, num_heads: int, mask_k_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = MaskedKBiasLinear(dim, dim * 3) if mask_k_bias else nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        sin, cos = rope
        prefix = tokens - sin.shape[-2]
        q = torch.cat([q[:, :, :prefix], _rotate(q[:, :, prefix:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :prefix], _rotate(k[:, :, prefix:], sin, cos)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """DINOv3's SwiGLU FFN: hidden = 2/3 of `hidden`, rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        width = int(hidden * 2 / 3)
        width += -width % 8
        self.w1, self.w2, self.w3 = nn.Linear(dim, width), nn.Linear(dim, width), nn.Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block; DINOv3 adds layer scales, the masked key bias and optionally SwiGLU."""

    def __init__(self, dim: int, num_heads: int, ffn: str = "mlp", eps: float = 1e-6,
                 layer_scale: float | None = None, mask_k_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, mask_k_bias)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SwiGLU(dim, dim * 6) if ffn == "swiglu" else Mlp(dim, dim * 4)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()

    def forward(self, x: Tensor, rope) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _init_linear_and_norms(module: nn.Module):
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            m.reset_parameters()


class ViTTiny(nn.Module):
    """DEIMv2's ViT-Tiny (192-d, 3 heads) / ViT-Tiny+ (256-d, 4 heads): 12 blocks, cls token, RoPE,
    no final norm; returns the patch tokens after the blocks in `taps`. Weights live under `_model`."""

    def __init__(self, embed_dim: int = 192, num_heads: int = 3, taps=(3, 7, 11), patch_size: int = 16,
                 depth: int = 12):
        super().__init__()
        self.embed_dim, self.patch_size, self.taps = embed_dim, patch_size, list(taps)
        self._model = nn.Module()
        self._model.patch_embed = nn.Module()
        self._model.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self._model.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self._model.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth))
        self._model.rope_embed = RopePositionEmbedding(embed_dim, num_heads)
        nn.init.trunc_normal_(self._model.cls_token, std=0.02)
        _init_linear_and_norms(self._model.blocks)

    @property
    def weights_target(self) -> nn.Module:
        return self._model

    def forward(self, x: Tensor) -> list[Tensor]:
        model = self._model
        tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        rope = model.rope_embed(x.shape[2] // self.patch_size, x.shape[3] // self.patch_size)
        outputs = []
        for i, block in enumerate(model.blocks[: max(self.taps) + 1]):
            tokens = block(tokens, rope)
            if i in self.taps:
                outputs.append(tokens[:, 1:])
        return outputs


class DINOv3ViT(nn.Module):
    """DINOv3 ViT-S/16, S+/16 (SwiGLU) or B/16: cls + 4 register tokens, RoPE (coordinates rescaled up
    to 2x in training), layer scale; the tapped outputs pass the final LayerNorm, patch tokens returned
    (the last block's are DINOv3's `x_norm_patchtokens`). `embed_dim` / `num_heads` shrink the named
    architecture (small stand-ins in tests)."""

    def __init__(self, name: str = "dinov3_vits16", taps=(5, 8, 11), patch_size: int = 16, depth: int = 12,
                 num_registers: int = 4, embed_dim: int | None = None, num_heads: int | None = None):
        super().__init__()
        if name not in DINOV3_ARCHS:
            raise ArgumentError(f"unknown DINOv3 model {name!r}; choose from {', '.join(DINOV3_ARCHS)}")
        arch_dim, arch_heads, ffn = DINOV3_ARCHS[name]
        embed_dim, num_heads = embed_dim or arch_dim, num_heads or arch_heads
        self.embed_dim, self.patch_size, self.taps = embed_dim, patch_size, list(taps)
        self.num_prefix = 1 + num_registers
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.empty(1, num_registers, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # used only by DINOv3's masked pretraining
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.rope_embed = RopePositionEmbedding(embed_dim, num_heads, rescale_coords=2.0)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, ffn, eps=1e-5, layer_scale=1e-5, mask_k_bias=True)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.storage_tokens, std=0.02)
        _init_linear_and_norms(self.blocks)

    @property
    def weights_target(self) -> nn.Module:
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        prefix = torch.cat([self.cls_token + 0 * self.mask_token, self.storage_tokens], dim=1)
        tokens = torch.cat([prefix.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        rope = self.rope_embed(x.shape[2] // self.patch_size, x.shape[3] // self.patch_size)
        outputs = []
        for i, block in enumerate(self.blocks[: max(self.taps) + 1]):
            tokens = block(tokens, rope)
            if i in self.taps:
                outputs.append(self.norm(tokens)[:, self.num_prefix:])
        return outputs
