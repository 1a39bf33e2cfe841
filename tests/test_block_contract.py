"""The contract every registered block keeps, checked generically from its declared example.

Builds the block, runs forward and backward at the example size and at twice its height and width,
checks the output channels follow the declared rule, counts FLOPs, and checks that its deploy form
(`fuse()`, BN folded, channels-last weights) gives the same output and leaves the input untouched
(the deploy form runs activations in place)."""
import copy
import inspect
import math

import pytest
import torch
from torch import nn

from blocks.registry import blocks, get
from metrics.flops import count_flops
from blocks.common import deploy_form

ALL_BLOCKS = [spec.name for spec in blocks()]


def example_inputs(spec, scale: int = 1):
    example = spec.example
    shapes = example.get("shapes") or [example["shape"]]
    tensors = [torch.randn(b, c, h * scale, w * scale, requires_grad=True) for b, c, h, w in shapes]
    multi = "shapes" in example
    c_in = [t.shape[1] for t in tensors] if multi else tensors[0].shape[1]
    return (tensors if multi else tensors[0]), c_in


def build_example(spec, c_in):
    args, kwargs = list(spec.example.get("args", [])), dict(spec.example.get("kwargs", {}))
    module = spec.cls(c_in, *args, **kwargs) if spec.takes_c_in else spec.cls(*args, **kwargs)
    bound = inspect.signature(spec.cls).bind(*([c_in] if spec.takes_c_in else []), *args, **kwargs)
    bound.apply_defaults()
    return module, spec.out_channels(c_in, dict(bound.arguments))


def example_targets(spec, batch: int):
    """Two boxes per image for decoders that take training targets."""
    num_classes = spec.example.get("kwargs", {}).get("num_classes", 2)
    return [{"labels": torch.tensor([0, num_classes - 1]),
             "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]])} for _ in range(batch)]


def call(module, x, targets=None):
    if "targets" in inspect.signature(module.forward).parameters:
        return module(x, targets=targets)
    return module(x)


def output_tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in output_tensors(item)]
    return []


def output_channels(out):
    if isinstance(out, torch.Tensor):
        return out.shape[1]
    if isinstance(out, (list, tuple)):
        return [t.shape[1] for t in out]
    return None


def randomize_norm_stats(module):
    """Non-trivial BN statistics so that a wrong conv+BN fusion cannot pass."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def check_block(name: str):
    """The whole contract for one block (also callable from a shell while writing a block)."""
    spec = get(name)
    assert spec.example, f"{name} declares no example for the contract test"
    assert spec.citation, f"{name} has no one-line citation docstring"
    torch.manual_seed(0)
    x, c_in = example_inputs(spec)
    module, c_out = build_example(spec, c_in)

    for scale in (1, 2):
        x, _ = example_inputs(spec, scale)
        batch = (x[0] if isinstance(x, list) else x).shape[0]
        module.train()
        out = call(module, x, example_targets(spec, batch))
        tensors = [t for t in output_tensors(out) if t.is_floating_point()]
        assert tensors, f"{name} returned no tensor"
        if c_out is not None:
            assert output_channels(out) == c_out, f"{name}: channel rule says {c_out}, got {output_channels(out)}"
        loss = sum(t.float().mean() for t in tensors)
        loss.backward()  # inputs require grad, so even a parameter-free block must pass gradients
        inputs = x if isinstance(x, list) else [x]
        assert any(t.grad is not None for t in inputs), f"{name}: no gradient reaches the input"
        trainable = [p for p in module.parameters() if p.requires_grad]
        if trainable:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable), f"{name}: no gradient"
        module.zero_grad()

    module.eval()
    x, _ = example_inputs(spec)
    profile = count_flops(module, x)
    assert math.isfinite(profile.flops) and profile.flops >= 0
    if any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules()):
        assert profile.flops > 0, f"{name} has convs or linears but counted no FLOPs"

    randomize_norm_stats(module)
    with torch.no_grad():
        expected = output_tensors(call(module, x))
        deployed = deploy_form(copy.deepcopy(module))
        inputs = [t.clone() for t in (x if isinstance(x, list) else [x])]
        actual = output_tensors(call(deployed, x))
    for before, after in zip(inputs, x if isinstance(x, list) else [x]):
        assert torch.equal(before, after), f"{name}: the deploy form overwrote its input"
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4, msg=f"{name}: the deploy form changed the output")
    # counted with the buffers: a folded frozen BN (statistics and affine all buffers) adds a conv bias
    assert _size(deployed) <= _size(module), f"{name}: the deploy form is larger"


def _size(module) -> int:
    return sum(t.numel() for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("name", ALL_BLOCKS)
def test_block_contract(name):
    check_block(name)


def test_every_block_declares_a_known_category_and_citation():
    assert len(ALL_BLOCKS) >= 5
    for spec in blocks():
        first_line = spec.citation
        assert first_line and ":" in first_line, f"{spec.name}: first docstring line must be 'Name: citation'"
