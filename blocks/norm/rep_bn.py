"""RepBN: SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch Normalization. ICML 2024. https://arxiv.org/abs/2405.11582

Progressive re-parameterised BN (PRepBN): training starts with LayerNorm and moves linearly, over
`step` training forwards (after `warm` pure-LayerNorm ones), to RepBN = BN(x) + alpha * x. Eval uses
RepBN only, and fuse() folds alpha into a plain BatchNorm. Takes (B, C, H, W) maps or (B, N, C) tokens."""
import torch
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


@register("norm", channels="same", example={"args": [1, 4], "shape": (2, 32, 16, 16)})
class RepBN(nn.Module):
    def __init__(self, c: int, warm: int = 0, step: int = 300000, r0: float = 1.0):
        super().__init__()
        # schedule counters are buffers so that they survive checkpoints and resume where they were
        self.register_buffer("warm", torch.tensor(warm))
        self.register_buffer("iter", torch.tensor(step))
        self.register_buffer("total_step", torch.tensor(step))
        self.r0 = r0
        self.ln = LayerNorm2d(c)
        self.bn = nn.BatchNorm2d(c)
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.dim() == 3
        if tokens:  # (B, N, C) -> (B, C, N, 1): BN and channel LayerNorm act on C alike
            x = x.transpose(1, 2).unsqueeze(-1)
        y = self._normalize(x)
        return y.squeeze(-1).transpose(1, 2) if tokens else y

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.ln is None:  # fused
            return self.bn(x)
        if not self.training:
            return self.bn(x) + self.alpha * x
        if self.warm > 0:
            self.warm.sub_(1)
            return self.ln(x)
        lam = self.r0 * self.iter.item() / max(self.total_step.item(), 1)
        if self.iter > 0:
            self.iter.sub_(1)
        return lam * self.ln(x) + (1 - lam) * (self.bn(x) + self.alpha * x)

    @torch.no_grad()
    def fuse(self):
        """BN(x) + alpha x is a BN with gamma + alpha * sqrt(var + eps) and beta + alpha * mean."""
        if self.ln is None:
            return
        self.bn.weight.add_(self.alpha * torch.sqrt(self.bn.running_var + self.bn.eps))
        self.bn.bias.add_(self.alpha * self.bn.running_mean)
        self.ln, self.alpha = None, None
