"""Parameter and FLOP counting, per model and per module.

FLOPs follow the conventions of the official model zoos' figures (calflops): convolutions and
matmuls count 2 x MACs (+ the bias adds for convs), activations, pools, softmax, interpolation
and `torch.add`/`torch.mul` count one FLOP per element, norms 2 (batch norm) or 5 (layer/group
norm) per element. Counting happens at the level of torch functions, so matmuls, einsum and
every functional call inside a block are seen without per-block code. Ops that calflops does
not count (operator `+`/`*` and Tensor.add/mul methods, which torch reports alike, `bmm`/`mm`,
sigmoid, grid_sample) are not counted either, and an interpolation counts what calflops counts
(its input elements for a scale factor, the product of `size` otherwise), so our totals and the
official ones stay comparable.
MACs are the multiply-accumulates of the product ops alone (convolutions, linears, matmuls,
einsum, attention projections): half of those ops' FLOPs without the bias adds; element-wise ops,
norms and pools have none. (calflops reports no MACs for einsum; we count them.)
nn.MultiheadAttention's fused inference path is switched off while counting, so its projections
and softmax are seen (calflops runs with grad enabled, which takes the same unfused path).
"""
from __future__ import annotations

import copy
import inspect
import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _first_tensor(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _conv(args, kwargs, out):
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    per_output = weight.shape[1] * math.prod(weight.shape[2:])  # (Cin / groups) x kernel area
    macs = out.numel() * per_output
    return 2 * macs + (out.numel() if bias is not None else 0), macs


def _deform_conv(args, kwargs, out):
    """torchvision's deformable conv (input, weight, offset, mask, bias, ...): counted like a conv.
    calflops does not see it at all; no official model uses it, so the zoo figures are unaffected."""
    weight, bias = args[1], args[4]
    macs = out.numel() * weight.shape[1] * math.prod(weight.shape[2:])
    return 2 * macs + (out.numel() if bias is not None else 0), macs


def _conv_transpose(args, kwargs, out):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    macs = x.numel() * weight.shape[1] * math.prod(weight.shape[2:])
    return 2 * macs + (out.numel() if bias is not None else 0), macs


def _linear(args, kwargs, out):
    # calflops: input elements x weight.shape[0] (for a 1-D weight that is its length again)
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    macs = _numel(args[0]) * weight.shape[0]
    return 2 * macs, macs


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def _multi_head_attention(args, kwargs, out, module=None):
    """What calflops sees inside F.multi_head_attention_forward: the q/k/v and output projections
    (F.linear), and when attention weights are returned the softmax (plus baddbmm with a mask).
    A module that asks for no weights where the official code returns them (the same maths, fused:
    attribute `counted_with_weights`) is counted as the official call."""
    bound = _MHA_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value, heads = a["query"], a["key"], a["value"], a["num_heads"]
    dim = query.shape[-1]
    macs = dim * (query.numel() + key.numel() + value.numel()) + query.numel() * dim
    flops = 2 * macs
    if a["need_weights"] or getattr(module, "counted_with_weights", False):
        batch = query.numel() // (query.shape[0] * dim)
        scores = batch * heads * query.shape[0] * key.shape[0]
        flops += scores
        if a["attn_mask"] is not None:
            macs += scores * (dim // heads)
            flops += 2 * scores * (dim // heads) + a["attn_mask"].numel()
    return flops, macs


def _matmul(args, kwargs, out):
    macs = out.numel() * args[0].shape[-1]
    return 2 * macs, macs


def _addmm(args, kwargs, out):
    macs = out.numel() * args[1].shape[-1]
    return 2 * macs + _numel(args[0]), macs


def _einsum(args, kwargs, out):
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes = {}
    for letters, tensor in zip(inputs, operands):
        for letter, size in zip(letters, tensor.shape):
            sizes[letter] = size
    macs = math.prod(sizes.values())
    return 2 * macs, macs


def _elementwise(args, kwargs, out):
    return _numel(out)


def _input_numel(args, kwargs, out):
    return _numel(_first_tensor(args, kwargs))


def _upsample(args, kwargs, out):
    # calflops: the input's elements for a scale factor (its scale multiply is a no-op), else prod(size)
    size = kwargs.get("size", args[1] if len(args) > 1 else None)
    if size is None:
        return _numel(_first_tensor(args, kwargs))
    return math.prod(size) if isinstance(size, (list, tuple)) else size


def _batch_norm(args, kwargs, out):
    weight = args[3] if len(args) > 3 else kwargs.get("weight")
    return _numel(out) * (2 if weight is not None else 1)


def _norm5(args, kwargs, out):
    return _numel(out) * 5


_RULES = {
    "conv1d": _conv, "conv2d": _conv, "conv3d": _conv,
    "conv_transpose1d": _conv_transpose, "conv_transpose2d": _conv_transpose, "conv_transpose3d": _conv_transpose,
    "linear": _linear, "deform_conv2d": _deform_conv,
    "matmul": _matmul, "__matmul__": _matmul,
    "addmm": _addmm, "baddbmm": _addmm,
    "einsum": _einsum, "multi_head_attention_forward": _multi_head_attention,
    "relu": _elementwise, "relu_": _elementwise, "relu6": _elementwise, "silu": _elementwise,
    "gelu": _elementwise, "elu": _elementwise, "leaky_relu": _elementwise, "prelu": _elementwise,
    "hardtanh": _elementwise, "softmax": _elementwise,
    "avg_pool1d": _input_numel, "avg_pool2d": _input_numel, "avg_pool3d": _input_numel,
    "max_pool1d": _input_numel, "max_pool2d": _input_numel, "max_pool3d": _input_numel,
    "window_max_2x2": _input_numel,  # HGStem's inference form of its max pool
    "adaptive_avg_pool1d": _input_numel, "adaptive_avg_pool2d": _input_numel,
    "adaptive_max_pool1d": _input_numel, "adaptive_max_pool2d": _input_numel,
    "interpolate": _upsample, "upsample": _upsample,
    "batch_norm": _batch_norm, "layer_norm": _norm5, "group_norm": _norm5, "instance_norm": _norm5,
    "add": _elementwise, "mul": _elementwise,
}
# `a + b`, `a * b` reach a TorchFunctionMode as these Tensor methods; only torch.add/torch.mul count
_UNCOUNTED = {torch.Tensor.add, torch.Tensor.mul}


class _FunctionCounter(TorchFunctionMode):
    """Counts FLOPs (and MACs) of torch functions, attributed to every module on the call stack."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.per_module: dict[nn.Module, float] = defaultdict(float)
        self.per_module_macs: dict[nn.Module, float] = defaultdict(float)
        self.stack: list[nn.Module] = []
        self.total = 0.0
        self.total_macs = 0.0
        self._handles = []
        for module in model.modules():
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, module, inputs):
        self.stack.append(module)

    def _leave(self, module, inputs, output):
        if self.stack and self.stack[-1] is module:
            self.stack.pop()

    def remove(self):
        for handle in self._handles:
            handle.remove()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = None if func in _UNCOUNTED else _RULES.get(getattr(func, "__name__", ""))
        if rule is not None and isinstance(out, (torch.Tensor, tuple)):
            extra = {"module": self.stack[-1] if self.stack else None} if rule is _multi_head_attention else {}
            counted = rule(args, kwargs, out, **extra)   # FLOPs, or (FLOPs, MACs) for a product op
            flops, macs = (float(counted[0]), float(counted[1])) if isinstance(counted, tuple) else (float(counted), 0.0)
            self.total += flops
            self.total_macs += macs
            for module in set(self.stack):
                self.per_module[module] += flops
                self.per_module_macs[module] += macs
        return out


@dataclass
class Profile:
    params: int
    flops: float                       # at batch 1
    per_module: dict                   # module -> FLOPs (includes its children)
    macs: float = 0.0                  # at batch 1: multiply-accumulates of the product ops
    per_module_macs: dict = field(default_factory=dict)  # module -> MACs (includes its children)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, inputs) -> Profile:
    """FLOPs of one eval-mode forward on `inputs` (a tensor or a tuple/list of tensors)."""
    was_training = model.training
    model.eval()
    counter = _FunctionCounter(model)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter:
            if isinstance(inputs, (list, tuple)) and not isinstance(inputs, torch.Tensor):
                model(inputs if len(inputs) > 1 else inputs[0])
            else:
                model(inputs)
    finally:
        counter.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return Profile(count_params(model), counter.total, dict(counter.per_module), counter.total_macs,
                   dict(counter.per_module_macs))


def deployed_copy(model: nn.Module, official: bool = False) -> nn.Module:
    """A deep copy in its inference form (blocks re-parameterised, every conv+BN folded; with
    `official`, the official deploy form, which keeps the BNs the official code keeps)."""
    clone = copy.deepcopy(model).eval()
    if hasattr(clone, "deploy"):
        clone.deploy(official=official)
    else:
        from blocks.common import fuse_modules
        fuse_modules(clone)
    return clone
