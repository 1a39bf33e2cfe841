"""The faster formulations give the numbers of the ones they replace: the stem's window max (inference
only; an ONNX file keeps the pool) and its channels-last layout on a CPU, the learnable affine as one addcmul, and the decoder's self-attention through
scaled_dot_product_attention with the denoising mask."""
import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocks.backbone._hgnetv2 import LearnableAffine
from blocks.backbone.hg_stem import HGStem, window_max_2x2


def test_window_max_equals_max_pool_on_a_map_full_of_ties():
    torch.manual_seed(0)
    x = F.pad(torch.relu(torch.randn(2, 5, 9, 7)).round(), (0, 1, 0, 1))  # zeros and repeated integers
    expected = nn.MaxPool2d(2, stride=1, ceil_mode=True)(x)
    assert expected.shape == (2, 5, 9, 7)
    assert torch.equal(window_max_2x2(x), expected)


def test_stem_infers_with_the_window_max_and_trains_with_max_pool():
    torch.manual_seed(0)
    stem = HGStem(3, 16, 16, use_lab=True).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        fast = stem(images)
    pooled = []
    stem.pool.register_forward_hook(lambda module, args, out: pooled.append(out))
    slow = stem(images)  # gradients on: the max_pool2d branch
    assert len(pooled) == 1 and slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_stem_runs_channels_last_inside_with_the_outputs_and_gradients_of_the_official_layout(memory_format):
    torch.manual_seed(0)
    stem = HGStem(3, 16, 16, use_lab=True).train()
    for p in stem.parameters():  # away from the initial values (affine 1 and 0): their gradients count too
        p.data.uniform_(0.5, 1.5)
    images = torch.rand(2, 3, 32, 32).contiguous(memory_format=memory_format)
    projection = torch.randn(2, 16, 8, 8)
    layouts = []
    stem.stem3.conv.register_forward_hook(
        lambda module, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    out = stem(images)
    grads = torch.autograd.grad((out * projection).sum(), list(stem.parameters()))
    assert layouts == [True] and out.is_contiguous(memory_format=memory_format)  # the next stage: input's layout

    official = copy.deepcopy(stem).double()

    def official_forward(x):  # every map channels-first, in float64: the reference both layouts round from
        x = F.pad(official.stem1(x), (0, 1, 0, 1))
        branch = official.stem2b(F.pad(official.stem2a(x), (0, 1, 0, 1)))
        return official.stem4(official.stem3(torch.cat([official.pool(x), branch], dim=1)))

    expected = official_forward(images.double().contiguous())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    expected_grads = torch.autograd.grad((expected * projection.double()).sum(), list(official.parameters()))
    for (name, _), ours, reference in zip(stem.named_parameters(), grads, expected_grads):
        torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4, msg=name)


def test_deployed_stem_hands_its_channels_last_output_on():
    # the deploy form stores conv weights channels-last so the stages run in that layout: the stem's
    # output stays channels-last (not converted back and forth) and equals the eval form's
    from blocks.common import deploy_form

    torch.manual_seed(0)
    stem = HGStem(3, 16, 16, use_lab=True).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = stem(images)
        assert expected.is_contiguous()
        out = deploy_form(stem)(images)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_max_pool_gives_a_tie_the_same_gradient_channels_last_as_channels_first():
    # the stem trains its pool channels-last on a CPU: a tie's gradient must still go to the window's first
    # maximum, as the official (channels-first) stem trains
    torch.manual_seed(0)
    x = F.pad(torch.relu(torch.randn(2, 5, 9, 7)).round(), (0, 1, 0, 1))  # zeros and repeated integers
    grad = torch.randn(2, 5, 9, 7)
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        leaf = x.clone().contiguous(memory_format=memory_format).requires_grad_()
        (nn.MaxPool2d(2, stride=1, ceil_mode=True)(leaf) * grad).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[0] != 0).sum() < grad.numel()  # ties: fewer cells got a gradient than there are windows


def test_exported_stem_keeps_the_pool_as_one_maxpool_node_with_the_same_outputs(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    stem = HGStem(3, 16, 16).eval()
    images = torch.rand(1, 3, 32, 32)
    path = tmp_path / "stem.onnx"
    with torch.no_grad():
        torch.onnx.export(stem, (images,), str(path), input_names=["images"], opset_version=17, dynamo=False)
        expected = stem(images)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("MaxPool") == 1 and "Max" not in ops  # onnxruntime's pool, not the maxima of slices
    (out,) = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-5)


def test_learnable_affine_is_scale_times_x_plus_bias_with_its_gradients():
    affine = LearnableAffine(1.5, -0.25)
    x = torch.randn(3, 4, requires_grad=True)
    affine(x).square().sum().backward()
    reference = (affine.scale * x + affine.bias).square().sum()
    grads = torch.autograd.grad(reference, [x, affine.scale, affine.bias])
    torch.testing.assert_close(affine(x), affine.scale * x + affine.bias)
    torch.testing.assert_close(x.grad, grads[0])
    torch.testing.assert_close(affine.scale.grad, grads[1])
    torch.testing.assert_close(affine.bias.grad, grads[2])


def test_self_attention_without_weights_equals_the_explicit_softmax_with_a_denoising_mask():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q = torch.randn(2, 10, 32)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:4, 4:] = True   # denoising queries do not see the matching queries ...
    mask[4:, :4] = True   # ... nor these the denoising ones
    explicit, _ = attention(q, q, q, attn_mask=mask)
    fused, _ = attention(q, q, q, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    # and the mask works: a denoising query's output ignores a change to the matching queries
    changed = q.clone()
    changed[:, 4:] += 1.0
    moved, _ = attention(changed, changed, changed, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(moved[:, :4], fused[:, :4])


def test_the_window_max_is_counted_as_the_pool_it_replaces():
    from metrics.flops import count_flops
    from tests.test_info import calflops_count

    stem = HGStem(3, 16, 16, use_lab=True).eval()
    counted = count_flops(stem, torch.zeros(1, 3, 64, 64))
    assert counted.flops == calflops_count(stem, (1, 3, 64, 64))  # calflops runs with gradients: the pool
    pools = [flops for module, flops in counted.per_module.items() if module is stem.pool]
    assert not pools  # the pool module did not run; the window max was counted inside the stem
    assert counted.flops - count_flops_without_pool(stem) == 16 * 33 * 33  # the padded map's elements


def count_flops_without_pool(stem):
    from metrics import flops

    rules = dict(flops._RULES)
    rules.pop("window_max_2x2")
    with mock.patch.object(flops, "_RULES", rules):
        return flops.count_flops(stem, torch.zeros(1, 3, 64, 64)).flops
