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
        exporting, on_cpu = torch.onnx.is_in_onnx_export(), x.device.type == "cpu"
        # the output keeps the input's layout, or the weights' (the deploy form and the channels_last
        # run option store them channels-last)
        keep_channels_last = is_channels_last(x) or is_channels_last(self.stem1.conv.weight)
        memory_format = torch.channels_last if keep_channels_last else torch.contiguous_format
        if on_cpu and not exporting:
            # torch's CPU kernels for these narrow full-resolution convs, their batch norms and the
            # stride-1 pool are 2-7x faster channels-last (the stem trains ~25% faster); the default
            # layout's stages after it are not, so the output returns to that layout
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.pad(self.stem1(x), (0, 1, 0, 1))  # 2x2 kernels: pad right/bottom to keep the size
        branch = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        # an ONNX file keeps the pool as one MaxPool node: onnxruntime's is faster than the maxima there,
        # and its int8 form quantizes as one op
        pooled = self.pool(x) if exporting or not on_cpu or x.requires_grad else window_max_2x2(x)
        x = torch.cat([pooled, branch], dim=1)
        return self.stem4(self.stem3(x)).contiguous(memory_format=memory_format)


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def window_max_2x2(x: torch.Tensor) -> torch.Tensor:
    """nn.MaxPool2d(2, stride=1, ceil_mode=True) of a map padded right and bottom by one, as three
    element-wise maxima: the same values, about 20x faster than max_pool2d's CPU kernel. Without
    gradients only: its backward is slower than max_pool2d's, and max_pool2d gives a tie's gradient
    to one cell (as the official stem trains) where maximum splits it."""
    if has_torch_function_unary(x):  # seen by torch function modes: metrics.flops counts it as the pool
        return handle_torch_function(window_max_2x2, (x,), x)
    rows = torch.maximum(x[..., :-1], x[..., 1:])
    return torch.maximum(rows[..., :-1, :], rows[..., 1:, :])
