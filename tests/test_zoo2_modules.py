"""Focused checks for the module batch (the DEIM plug-in's C2f-module blocks): numbers pinned from the
authors' code under deterministic weights, properties of the heat-conduction operator, the shift and
symmetrisation helpers, deterministic CAMixer inference and the early channel errors. The generic
contract test covers shapes, channel rules, FLOPs, backward and fuse()."""
import math

import numpy as np
import pytest
import scipy.fft
import torch

from blocks.backbone.ap_bottleneck import _ARMS, APBottleneck
from blocks.backbone.arf import ARF
from blocks.backbone.irmb import iRMB
from blocks.backbone.jdpm import JDPM
from blocks.backbone.lfe import shift_channels
from blocks.backbone.mscb import channel_shuffle
from blocks.backbone.nnwnet import nnWNet
from blocks.backbone.v_heat import HeatConduction, dct_basis, vHeat
from blocks.neck.c2f import C2f
from blocks.registry import ChannelError
from blocks.transformer.camixer import CAMixer
from blocks.transformer.elgca import ELGCA
from blocks.transformer.esc import geometric_ensemble
from metrics.flops import count_flops


def _fill(module: torch.nn.Module) -> torch.nn.Module:
    """Deterministic weights in state-dict order (the same recipe produced the pinned numbers)."""
    with torch.no_grad():
        floats = [(n, t) for n, t in module.state_dict().items() if t.is_floating_point()]
        for i, (name, tensor) in enumerate(floats):
            values = torch.sin(torch.arange(tensor.numel(), dtype=torch.float64) * 0.37 + i).float()
            values = 1.0 + 0.5 * values.abs() if name.endswith("running_var") else 0.1 * values
            tensor.copy_(values.reshape(tensor.shape))
    return module.eval()


def _probe(shape) -> torch.Tensor:
    return torch.sin(torch.arange(math.prod(shape), dtype=torch.float64) * 0.011).float().reshape(shape)


# outputs of the authors' modules (vHeat HeatBlock, EMO iRMB, ELGC-Net EncoderBlock; nnWNet's 3-D
# global_block on a depth-3 copy of the probe, its projection kernel zero outside the middle depth slice,
# middle slice read; the plug-in guide's ARF on Ultralytics' Conv, whose gate is linear) loaded with the same
# weights, recorded outside the repository: first four values and the sum
PINNED = {
    "ARF": (lambda: ARF(16, 32, sigmoid_gate=False), (1, 16, 7, 5),
            [0.0023917199578136206, 0.0023901190143078566, 0.002388648223131895, 0.002387161599472165], 0.572094202041626),
    "nnWNet": (lambda: nnWNet(16, 16), (1, 16, 7, 5),
               [0.14989593625068665, 0.15187105536460876, 0.1437787115573883, 0.1594662219285965], 5.902529716491699),
    "vHeat": (lambda: vHeat(16, res=6), (1, 16, 6, 6),
              [0.1552990823984146, 0.1658627986907959, 0.17632687091827393, 0.1867806613445282], -44.46956253051758),
    "iRMB": (lambda: iRMB(16, 16, dim_head=8, window_size=3), (1, 16, 7, 5),
             [-0.019652623683214188, -0.014549564570188522, 0.0023445338010787964, 0.007444705814123154], 2.2451858520507812),
    "ELGCA": (lambda: ELGCA(16), (1, 16, 8, 8),
              [-0.01514337956905365, -0.009807586669921875, 0.0001811683177947998, 0.010166920721530914], 59.16126251220703),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_output_matches_numbers_pinned_from_the_authors_code(name):
    build, shape, first, total = PINNED[name]
    with torch.no_grad():
        out = _fill(build())(_probe(shape))
    torch.testing.assert_close(out.flatten()[:4], torch.tensor(first), atol=1e-5, rtol=1e-5)
    assert out.sum().item() == pytest.approx(total, abs=1e-3)


@pytest.mark.parametrize("n", [1, 5, 14])
def test_dct_basis_is_scipys_orthonormal_dct2(n):
    x = np.random.default_rng(0).standard_normal((n, 3))
    expected = scipy.fft.dct(x, type=2, norm="ortho", axis=0)
    basis = dct_basis(n, dtype=torch.float64)
    np.testing.assert_allclose((basis @ torch.from_numpy(x)).numpy(), expected, atol=1e-10)
    torch.testing.assert_close(basis @ basis.T, torch.eye(n, dtype=torch.float64))


def _heat_with_time(c: int, time: float) -> HeatConduction:
    """A heat operator whose conduction time k is `time` for every frequency and channel."""
    op = HeatConduction(c).eval()
    with torch.no_grad():
        op.to_k[0].weight.zero_()
        op.to_k[0].bias.fill_(time)
    return op


def _gated_output(op: HeatConduction, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    z = op.linear(op.dwconv(x).permute(0, 2, 3, 1)).chunk(2, dim=-1)[1]
    return op.out_linear(op.out_norm(u) * torch.nn.functional.silu(z)).permute(0, 3, 1, 2)


def test_heat_conduction_for_no_time_leaves_the_field_and_for_long_time_its_mean():
    torch.manual_seed(0)
    x, embed = torch.randn(2, 8, 6, 10), torch.randn(6, 10, 8)
    with torch.no_grad():
        still = _heat_with_time(8, 0.0)
        u = still.linear(still.dwconv(x).permute(0, 2, 3, 1)).chunk(2, dim=-1)[0]
        torch.testing.assert_close(still(x, embed), _gated_output(still, x, u), atol=1e-5, rtol=1e-5)
        settled = _heat_with_time(8, 200.0)
        settled.load_state_dict({**still.state_dict(), "to_k.0.bias": settled.to_k[0].bias})
        mean = u.mean(dim=(1, 2), keepdim=True).expand_as(u)  # zero-flux borders conserve the mean
        torch.testing.assert_close(settled(x, embed), _gated_output(settled, x, mean), atol=1e-4, rtol=1e-4)


def test_vheat_flops_count_the_dct_einsums():
    block = vHeat(16, res=8).eval()
    height, width, c = 8, 12, 16
    profile = count_flops(block, torch.randn(1, c, height, width))
    own = profile.per_module[block.op] - sum(profile.per_module.get(m, 0) for m in block.op.children())
    # DCT and inverse DCT along H (H x H matrix) and W (W x W), 2 FLOPs per MAC; the decay product
    # (an einsum, 2 per element) and the SiLU gate (1 per element) are the op's other own FLOPs
    dct = 2 * 2 * c * height * width * (height + width)
    assert own == dct + 2 * c * height * width + c * height * width


def test_shift_channels_moves_each_fifth_one_pixel():
    x = torch.arange(5 * 3 * 4, dtype=torch.float32).reshape(1, 5, 3, 4)
    y = shift_channels(x)
    torch.testing.assert_close(y[0, 0, :, :-1], x[0, 0, :, 1:])  # left: y(i, j) = x(i, j + 1)
    torch.testing.assert_close(y[0, 1, :, 1:], x[0, 1, :, :-1])  # right
    torch.testing.assert_close(y[0, 2, :-1], x[0, 2, 1:])  # up
    torch.testing.assert_close(y[0, 3, 1:], x[0, 3, :-1])  # down
    torch.testing.assert_close(y[0, 4], x[0, 4])  # kept
    assert y[0, 0, :, -1].abs().sum() == 0 and y[0, 3, 0].abs().sum() == 0  # zero padding enters


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_geometric_ensemble_is_flip_and_rotation_invariant():
    kernel = torch.randn(3, 3, 5, 5)
    sym = geometric_ensemble(kernel)
    for view in (sym.flip(3), sym.flip(2), torch.rot90(sym, 1, [2, 3])):
        torch.testing.assert_close(view, sym)
    torch.testing.assert_close(geometric_ensemble(sym), sym)


def test_camixer_inference_is_deterministic_and_crops_the_padding():
    torch.manual_seed(0)
    block = CAMixer(16, window_size=4).eval()
    x = torch.randn(1, 16, 10, 7)
    with torch.no_grad():
        first, second = block(x), block(x)
    assert first.shape == x.shape
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_apbottleneck_pinwheel_arms_read_four_corners():
    block = APBottleneck(4, 4, shortcut=False).eval()
    with torch.no_grad():
        block.arm.conv.weight.fill_(1.0)
        block.arm.norm = torch.nn.Identity()
        block.arm.act = torch.nn.Identity()
        x = torch.zeros(1, 4, 7, 7)
        x[0, 0, 3, 3] = 1.0
        arms = torch.cat([block.arm(torch.nn.functional.pad(x, pad)) for pad in _ARMS], 1)
    # arm 0 (padded left and top) sees the impulse from the pixels down-right of it, arm 1 from up-left, ...
    assert arms[0, 0, 3:6, 3:6].sum() == 9 and arms[0, 0].sum() == 9
    assert arms[0, 1, 1:4, 1:4].sum() == 9 and arms[0, 1].sum() == 9
    assert arms[0, 2, 3:6, 1:4].sum() == 9 and arms[0, 3, 1:4, 3:6].sum() == 9


@pytest.mark.parametrize("build, message", [
    (lambda: APBottleneck(6, 6), "divisible by 4"),
    (lambda: ELGCA(18), "divisible by 4"),
    (lambda: JDPM(32, 8), "at least 16"),
    (lambda: iRMB(48, 48, dim_head=32), "not divisible by dim_head"),
    (lambda: nnWNet(16, 30, groups=4), "divisible by groups=4"),
])
def test_bad_channels_fail_early_with_a_clear_message(build, message):
    with pytest.raises(ChannelError, match=message):
        build()


def test_arg0_blocks_nest_in_c2f_with_the_container_width():
    from models.graph import _nested

    factory = _nested({"module": "iRMB", "args": {"dim_head": 16}}, "test")
    block = C2f(64, 64, n=1, block=factory)
    assert isinstance(block.m[0], iRMB) and block.m[0].proj.out_channels == 32
    assert block(torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)
