"""Focused checks for the second conv batch (DEConv ... Converse2D): operators checked against
independent computations (a loop transcription of a CUDA kernel, normal equations, circular
convolution by shifts), re-parameterisation in cases the contract's example does not reach, numbers
pinned from the authors' code, and the errors for bad channels."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from blocks.common import fuse_modules
from blocks.conv.conv_attn import ConvAttn
from blocks.conv.converse2d import Converse2D
from blocks.conv.deconv import DEConv
from blocks.conv.deep_dbb import DeepDBB
from blocks.conv.dsa import DSA, strip_sample
from blocks.conv.dynamic_snake_conv import DynamicSnakeConv
from blocks.conv.fd_conv import FDConv, _FrequencyBandModulation
from blocks.conv.fourier_conv import FourierConv
from blocks.conv.idwc import IDWC
from blocks.conv.mbr_conv import MBRConv
from blocks.conv.sfs_conv import SFSConv
from blocks.conv.shiftwise_conv import ShiftwiseConv
from blocks.conv.wdbb import WDBB
from blocks.registry import ChannelError


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BN statistics, so a fuse that drops a branch or a BN cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return module.eval()


def _fused_equal(module: torch.nn.Module, x: torch.Tensor, single_conv: bool = True):
    reference = module(x)
    fused = fuse_modules(copy.deepcopy(module))
    torch.testing.assert_close(fused(x), reference, atol=1e-4, rtol=1e-4)
    if single_conv:
        convs = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 1, f"fused {type(module).__name__} should be one conv, has {len(convs)}"
    return fused


@pytest.mark.parametrize("block", [
    WDBB(8, 16, 3, 2, 2), WDBB(8, 8, 5, 1, 8), DeepDBB(8, 16, 3, 2, 2), DeepDBB(8, 8, 3, 1, 8),
    MBRConv(8, 16, 1), MBRConv(8, 16, 5, 2), DEConv(8),
])
def test_reparameterised_blocks_fuse_to_one_conv_with_groups_strides_and_sizes(block):
    _fused_equal(_randomise(block), torch.randn(2, 8, 11, 13))


def test_wdbb_adds_the_two_strip_branches_to_the_dbb_sum():
    block = _randomise(WDBB(4, 4, 3))
    x = torch.randn(1, 4, 7, 7)
    expected = block.act(block.ver_bn(F.conv2d(x, block.ver.weight, padding=(1, 0)))
                         + block.hor_bn(F.conv2d(x, block.hor.weight, padding=(0, 1)))
                         + super(WDBB, block).branch_sum(x))
    torch.testing.assert_close(block(x), expected)


def test_deconv_difference_kernels_ignore_flat_regions_and_take_left_minus_right():
    block = DEConv(3)
    with torch.no_grad():
        block.vanilla.zero_()
    # the four difference kernels each sum to zero over the taps: a constant input gives zero
    assert block.kernel().sum((2, 3)).abs().max() < 1e-5
    with torch.no_grad():
        for name in ("central", "vertical", "angular"):
            getattr(block, name).zero_()
    x = torch.randn(1, 3, 6, 6)
    padded = F.pad(x, [1] * 4)
    w = block.horizontal.detach()                                     # (c_out, c_in, 3): one tap per row
    expected = sum(torch.einsum("oi,bihw->bohw", w[..., r], padded[..., r:r + 6, 0:6] - padded[..., r:r + 6, 2:8])
                   for r in range(3))
    torch.testing.assert_close(F.conv2d(x, block.kernel(), padding=1), expected, atol=1e-5, rtol=1e-5)


def _dscn_loop(x, offset, k):
    """The authors' DSCN CUDA kernel (dscn_im2col_gpu_kernel, on_x) transcribed loop by loop."""
    b, h, w, g, cg = x.shape
    out = torch.zeros_like(x)
    for n in range(b):
        for r in range(h):
            for col in range(w):
                for grp in range(g):
                    for c in range(cg):
                        total = 0.0
                        for i in range(k):
                            loc = col - (k - 1) // 2 + i + float(offset[n, r, col, grp, i])
                            if -1 < loc < w:
                                low = math.floor(loc)
                                frac = loc - low
                                v1 = float(x[n, r, low, grp, c]) if low >= 0 else 0.0
                                v2 = float(x[n, r, low + 1, grp, c]) if low + 1 <= w - 1 else 0.0
                                total += (1 - frac) * v1 + frac * v2
                        out[n, r, col, grp, c] = total
    return out


def test_dsa_strip_sampler_matches_a_loop_transcription_of_the_authors_kernel():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 2, 2, generator=gen)
    offset = torch.randn(1, 2, 6, 2, 3, generator=gen) * 2
    offset[0, 0, 0, 0, 0] = -2.0        # lands exactly on -1: outside (the kernel's strict bound)
    torch.testing.assert_close(strip_sample(x, offset, 3), _dscn_loop(x, offset, 3), atol=1e-5, rtol=1e-5)


def test_dsa_offsets_reach_the_output_gradient():
    block = DSA(8, k=3, dw_k=3, group=2)
    with torch.no_grad():
        block.strip_x.offset.bias.fill_(0.3)
    block(torch.randn(1, 8, 6, 6)).sum().backward()
    assert block.strip_x.offset.bias.grad.abs().sum() > 0


def test_snake_conv_without_offsets_is_a_strip_conv_on_a_border_replicated_map():
    block = DynamicSnakeConv(4, 8, 5)
    snake = block.snake_x
    with torch.no_grad():
        snake.offset_conv.weight.zero_()
        snake.offset_conv.bias.zero_()
    x = torch.randn(2, 4, 7, 9)
    strip = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), snake.conv.weight.transpose(2, 3), snake.conv.bias)
    torch.testing.assert_close(snake(x), snake.act(snake.norm(strip)), atol=1e-5, rtol=1e-5)


def test_shiftwise_conv_equals_one_depthwise_conv_with_the_assembled_strip_kernels():
    c, big, small = 3, 7, 3
    block = _randomise(ShiftwiseConv(c, big, small))
    n = block.slices
    span = n * small                     # slices cover offsets [-(big // 2), -(big // 2) + span)
    size = 2 * max(big // 2, span - 1 - big // 2) + 1
    centre = size // 2
    dense_h, dense_v = torch.zeros(c, 1, size, size), torch.zeros(c, 1, size, size)
    split = block.split.weight.detach().reshape(c, n, small, small)
    with torch.no_grad():
        for i in range(n):
            start = centre - big // 2 + i * small
            rows = slice(centre - small // 2, centre + small // 2 + 1)
            dense_h[:, 0, rows, start:start + small] += torch.sigmoid(block.mask_h[:, i, None, None]) * split[:, i]
            dense_v[:, 0, start:start + small, rows] += torch.sigmoid(block.mask_v[:, i, None, None]) * split[:, i]
        x = torch.randn(2, c, 9, 10)
        expected = (block.norm_h(F.conv2d(x, dense_h, padding=centre, groups=c))
                    + block.norm_v(F.conv2d(x, dense_v, padding=centre, groups=c))
                    + block.small_norm(block.small(x)))
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    _fused_equal(block, x, single_conv=False)


def test_shiftwise_conv_reproduces_numbers_pinned_from_the_authors_code():
    def fill(t, i):
        return (torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.7 + i) * 0.3).reshape(t.shape).float()

    block = ShiftwiseConv(2, 7, 3).eval()
    with torch.no_grad():
        # the authors' parameters in their order: split conv, two masks, small conv, three BNs
        block.split.weight.copy_(fill(block.split.weight, 0))
        block.mask_h.copy_(fill(block.mask_h, 1))
        block.mask_v.copy_(fill(block.mask_v, 2))
        block.small.weight.copy_(fill(block.small.weight, 3))
        for j, bn in enumerate((block.norm_h, block.norm_v, block.small_norm)):
            bn.weight.copy_(1 + fill(bn.weight, 4 + j))
            bn.bias.copy_(fill(bn.bias, 7 + j))
            bn.running_mean.copy_(fill(bn.running_mean, 10 + j))
            bn.running_var.copy_(1 + fill(bn.running_var, 13 + j).abs())
        y = block(fill(torch.empty(1, 2, 6, 6), 20))
    # lidc54/shift-wiseConv models/SLaK_pw_wt.py ReparamLargeKernelConv(2, 2, 7, 1, 2, 3, Decom=True)
    assert y.sum().item() == pytest.approx(63.95127868652344, abs=1e-4)
    torch.testing.assert_close(y[0, 0, 2], torch.tensor([1.2258333, 1.2071297, 1.0607467, 0.9138471, 0.8789617, 0.8726099]))
    torch.testing.assert_close(y[0, 1, :, 5], torch.tensor([0.8754106, 0.8467981, 0.4796645, 0.8253881, 0.8031806, 0.6746510]))


def test_fourier_conv_at_its_size_is_a_circular_depthwise_conv_with_a_whole_map_kernel():
    block = FourierConv(2, size=(5, 6))
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    block = block.double()
    kernel = torch.fft.irfftn(block.filter(5, 6), s=(5, 6), dim=(-2, -1))[0]     # (c, 5, 6) spatial kernel
    expected = sum(kernel[:, i, j, None, None] * torch.roll(x[0], (i, j), dims=(-2, -1))
                   for i in range(5) for j in range(6))
    torch.testing.assert_close(block(x)[0], expected)
    assert block(torch.randn(1, 2, 8, 9)).shape == (1, 2, 8, 9)      # other sizes resize the filter


def test_converse2d_solves_its_regularised_normal_equations():
    block = Converse2D(2, k=3, padding=0).double()
    with torch.no_grad():
        block.bias.fill_(8.0)                                          # lambda = sigmoid(-1) + eps
    y = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    x = block(y)
    lam = torch.sigmoid(block.bias - 9.0) + block.eps
    w = block.weight.detach().reshape(2, 1, 3, 3)

    def conv(t):       # circular convolution with the kernel (centred at the origin)
        return F.conv2d(F.pad(t, [1] * 4, mode="circular"), w.flip(-2, -1), groups=2)

    def adjoint(t):    # its transpose: circular correlation
        return F.conv2d(F.pad(t, [1] * 4, mode="circular"), w, groups=2)

    torch.testing.assert_close(adjoint(conv(x)) + lam * x, adjoint(y) + lam * y)


def test_fdconv_frequency_bands_add_back_to_the_input_when_unweighted():
    fbm = _FrequencyBandModulation(3)
    with torch.no_grad():
        for conv in fbm.convs:
            conv.weight.zero_()             # every band weight = 2 * sigmoid(0) = 1
    x = torch.randn(2, 3, 10, 12)
    torch.testing.assert_close(fbm(x), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build, message", [
    (lambda: FDConv(3, 5, 3, kernel_num=4), "not divisible by kernel_num"),
    (lambda: SFSConv(12, 16), "divisible by 8"),
    (lambda: DSA(12, group=8), "divisible by group"),
    (lambda: ConvAttn(8, pdim=16), "pdim"),
    (lambda: IDWC(4), "channels per branch"),
    (lambda: DynamicSnakeConv(8, 6), "divisible by 4"),
])
def test_bad_channel_counts_fail_early_with_a_channel_error(build, message):
    with pytest.raises(ChannelError, match=message):
        build()
