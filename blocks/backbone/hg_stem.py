"""HGStem: PP-HGNetV2 stem (as in D-FINE). CVPR 2025. https://arxiv.org/abs/2410.13842

Stride-4 stem: a stride-2 3x3 conv, then a 2x2-conv branch and a max-pool branch concatenated,
a stride-2 3x3 conv and a 1x1 conv. Keys match the official `backbone.stem`."""
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import handle_torch_function, has_torch_function_unary

from blocks.backbone._hgnetv2 import ConvBNAct, apply_freezing, load_pretrained
from blocks.registry import register


@register("backbone", channels=lambda c_in, kw: kw["out_chs"],
          example={"args": [16, 16], "kwargs": {"use_lab": True}, "shape": (2, 3, 32, 32)})
class HGStem(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, use_lab: bool = False,
                 freeze: bool = False, freeze_norm: bool = False, pretrained: str | None = None):
        super().__init__()
        self.stem1 = ConvBNAct(in_chs, mid_chs, 3, 2, use_lab=use_lab)
        self.stem2a = ConvBNAct(mid_chs, mid_chs // 2, 2, use_lab=use_lab)
        self.stem2b = ConvBNAct(mid_chs // 2, mid_chs, 2, use_lab=use_lab)
        self.stem3 = ConvBNAct(mid_chs * 2, mid_chs, 3, 2, use_lab=use_lab)
        self.stem4 = ConvBNAct(mid_chs, out_chs, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)
        apply_freezing(self, freeze, freeze_norm)
        if pretrained:
            load_pretrained(self, pretrained, r"stem\.", "HGStem")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))  # 2x2 kernels: pad right/bottom to keep the size
        branch = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        # an ONNX file keeps the pool as one MaxPool node: onnxruntime's is faster than the maxima there,
        # and its int8 form quantizes as one op
        if torch.onnx.is_in_onnx_export() or x.device.type != "cpu":
            pooled = self.pool(x)
        elif x.requires_grad:
            pooled = CpuTrainingPool.apply(x)
        else:
            pooled = window_max_2x2(x)
        x = torch.cat([pooled, branch], dim=1)
        return self.stem4(self.stem3(x))


class CpuTrainingPool(torch.autograd.Function):
    """nn.MaxPool2d(2, stride=1, ceil_mode=True) with the same values, indices and gradients, run
    channels-last, where torch's CPU kernel is about 5x faster than channels-first on the stem's map
    (forward and backward together 17-19 ms against 30 ms at batch 4, 320 px, 2 threads). The output
    and the input's gradient keep the input's memory format."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x_last = x.contiguous(memory_format=torch.channels_last)
        pooled, indices = F.max_pool2d(x_last, 2, stride=1, ceil_mode=True, return_indices=True)
        ctx.save_for_backward(x_last, indices)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        ctx.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return pooled.contiguous(memory_format=ctx.memory_format)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x_last, indices = ctx.saved_tensors
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(memory_format=torch.channels_last), x_last, [2, 2], [1, 1], [0, 0], [1, 1], True, indices)
        return grad_x.contiguous(memory_format=ctx.memory_format)


def window_max_2x2(x: torch.Tensor) -> torch.Tensor:
    """nn.MaxPool2d(2, stride=1, ceil_mode=True) of a map padded right and bottom by one, as three
    element-wise maxima: the same values, about 20x faster than max_pool2d's CPU kernel. Without
    gradients only: its backward is slower than max_pool2d's, and max_pool2d gives a tie's gradient
    to one cell (as the official stem trains) where maximum splits it."""
    if has_torch_function_unary(x):  # seen by torch function modes: metrics.flops counts it as the pool
        return handle_torch_function(window_max_2x2, (x,), x)
    rows = torch.maximum(x[..., :-1], x[..., 1:])
    return torch.maximum(rows[..., :-1, :], rows[..., 1:, :])
