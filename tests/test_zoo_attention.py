"""Focused checks for the attention / norm / mlp zoo blocks: the subtle parts the generic contract misses."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline

from blocks.attention.deformable_lka import DeformableLKA
from blocks.attention.eca import eca_kernel_size
from blocks.attention.mlca import MLCA
from blocks.attention.simam import SimAM
from blocks.mlp._gated_dconv import PatchFFTFilter
from blocks.mlp.kan_conv import KANConv
from blocks.mlp.sefn import SEFN
from blocks.norm.dyt import DyT
from blocks.norm.rep_bn import RepBN
from blocks.registry import get

GROUP = ["SE", "CBAM", "TripletAttention", "CoordAtt", "SimAM", "ECA", "EMA", "LSKBlock", "MLCA", "GAM", "SEAM",
         "MultiSEAM", "DeformableLKA", "RepBN", "DyT", "ConvolutionalGLU", "GDFN", "DFFN", "EDFFN", "SEFN", "KANConv"]


@pytest.mark.parametrize("name", GROUP)
def test_block_runs_on_the_stride_32_map_of_small_images(name):
    """A graph's build check runs 64 px images (2 x 2 at stride 32); 32 px gives 1 x 1; odd sides occur too."""
    spec = get(name)
    c = (spec.example.get("shape") or spec.example["shapes"][0])[1]
    args = spec.example.get("args", [])
    block = (spec.cls(c, *args) if spec.takes_c_in else spec.cls(*args)).eval()
    for size in [(2, 2), (1, 1), (3, 5)]:
        with torch.no_grad():
            assert block(torch.randn(1, c, *size)).shape == (1, c, *size)


def test_simam_matches_hand_computed_energy():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # mean 2.5; squared deviations 2.25, 0.25, 0.25, 2.25 (sum 5); variance over M - 1 = 3 neurons
    denom = 4 * (5 / 3 + 1e-4)
    expected = [v / (1 + math.exp(-(d / denom + 0.5))) for v, d in zip([1, 2, 3, 4], [2.25, 0.25, 0.25, 2.25])]
    torch.testing.assert_close(SimAM()(x).flatten(), torch.tensor(expected))


def _channel_layer_norm(x):
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _batch_norm_train(x):
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def test_repbn_moves_from_layernorm_to_repbn_then_fuses_to_one_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5) * 3 + 1
    norm = RepBN(6, warm=1, step=2).train()
    ln, repbn = _channel_layer_norm(x), _batch_norm_train(x) + x  # alpha starts at 1, BN affine at identity
    expected = [ln, ln, 0.5 * ln + 0.5 * repbn, repbn, repbn]  # warm-up, lambda = 1, 1/2, 0, 0
    for step, want in enumerate(expected):
        torch.testing.assert_close(norm(x), want, atol=1e-5, rtol=1e-5, msg=f"training forward {step}")
    assert norm.warm.item() == 0 and norm.iter.item() == 0

    with torch.no_grad():
        norm.alpha.fill_(0.7)
        norm.bn.weight.uniform_(0.5, 1.5)
        norm.bn.bias.uniform_(-0.5, 0.5)
    norm.eval()
    bn = norm.bn
    by_hand = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    by_hand = by_hand * bn.weight[:, None, None] + bn.bias[:, None, None] + 0.7 * x
    torch.testing.assert_close(norm(x), by_hand.detach(), atol=1e-5, rtol=1e-5)
    norm.fuse()
    torch.testing.assert_close(norm(x), by_hand.detach(), atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in norm.parameters()) == 2 * 6  # one BatchNorm's affine, nothing else


def test_repbn_and_dyt_take_tokens_with_channels_last():
    torch.manual_seed(0)
    tokens = torch.randn(2, 7, 6)
    norm = RepBN(6, warm=1).train()
    want = (tokens - tokens.mean(-1, keepdim=True)) / torch.sqrt(tokens.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(tokens), want, atol=1e-5, rtol=1e-5)

    dyt = DyT(6, alpha_init=2.0)
    with torch.no_grad():
        dyt.weight.copy_(torch.arange(6.0))
        dyt.bias.fill_(0.5)
    torch.testing.assert_close(dyt(tokens), torch.tanh(2 * tokens) * torch.arange(6.0) + 0.5)
    maps = tokens.transpose(1, 2).reshape(2, 6, 7, 1)
    torch.testing.assert_close(dyt(maps), torch.tanh(2 * maps) * torch.arange(6.0).view(6, 1, 1) + 0.5)


def test_kan_basis_matches_scipy_bspline_design_matrix():
    layer = KANConv(2, grid_size=5, spline_order=3)
    x = torch.linspace(-1, 0.999, 50).view(1, 2, 5, 5)
    ours = layer.basis(x).permute(0, 1, 3, 4, 2).reshape(50, -1).numpy()
    reference = BSpline.design_matrix(x.flatten().numpy(), layer.knots.numpy(), 3).toarray()
    assert ours.shape == (50, 8)  # grid_size + spline_order bases per input
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_kan_conv_is_base_plus_spline_functions_per_input():
    torch.manual_seed(0)
    layer = KANConv(2, k=1, grid_size=3, spline_order=2)
    x = torch.rand(1, 2, 1, 1) * 1.8 - 0.9
    bases = BSpline.design_matrix(x.flatten().numpy(), layer.knots.numpy(), 2).toarray()  # (2 inputs, 5)
    w_base = layer.base.weight.detach()[:, :, 0, 0].numpy()
    w_spline = layer.spline.weight.detach()[:, :, 0, 0].numpy().reshape(2, 2, 5)
    xs = x.flatten().numpy()
    silu = xs / (1 + np.exp(-xs))
    want = [sum(w_base[o, i] * silu[i] + w_spline[o, i] @ bases[i] for i in range(2)) for o in range(2)]
    np.testing.assert_allclose(layer(x).flatten().detach().numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels, kernel", [(16, 3), (64, 3), (128, 5), (256, 5), (1024, 5)])
def test_eca_adaptive_kernel_follows_the_paper(channels, kernel):
    assert eca_kernel_size(channels) == kernel  # k = odd(|(log2 C + 1) / 2|)


def test_mlca_treats_every_sample_alone():
    torch.manual_seed(0)
    block = MLCA(32).eval()
    batch = torch.randn(3, 32, 16, 16)
    one_by_one = torch.cat([block(sample[None]) for sample in batch])
    torch.testing.assert_close(block(batch), one_by_one)


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_patch_fft_filter_starts_as_identity(size):
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(PatchFFTFilter(3)(x), x, atol=1e-5, rtol=1e-5)


def test_patch_fft_filter_keeping_only_dc_gives_patch_means():
    x = torch.randn(1, 2, 16, 24)
    fft = PatchFFTFilter(2)
    with torch.no_grad():
        fft.weight.zero_()
        fft.weight[..., 0, 0] = 1
    patch_means = F.avg_pool2d(x, 8)
    torch.testing.assert_close(fft(x), F.interpolate(patch_means, scale_factor=8, mode="nearest"),
                               atol=1e-5, rtol=1e-5)


def test_deformable_lka_with_zero_offsets_is_large_kernel_attention():
    torch.manual_seed(0)
    block = DeformableLKA(4)
    with torch.no_grad():
        for conv in (block.conv0, block.conv_spatial):
            conv.offset.weight.zero_()
            conv.offset.bias.zero_()
    x = torch.randn(2, 4, 16, 16)
    attn = F.conv2d(x, block.conv0.weight, padding=2, groups=4)
    attn = F.conv2d(attn, block.conv_spatial.weight, padding=9, dilation=3, groups=4)
    attn = block.conv1(attn)
    torch.testing.assert_close(block(x), x * attn, atol=1e-5, rtol=1e-5)


def test_sefn_alone_uses_its_input_as_the_spatial_branch():
    torch.manual_seed(0)
    block = SEFN(8)
    x, other = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 12, 12)
    torch.testing.assert_close(block(x), block([x, x]))
    assert not torch.allclose(block([x, other]), block(x))


@pytest.mark.parametrize("graph", ["attention/se.yaml", "attention/gam.yaml", "norm/rep_bn.yaml", "mlp/sefn.yaml"])
def test_ablation_graph_templates_build_and_run(graph):
    """One graph per placement: after stage 4, on the encoder outputs, residual FFN on the encoder outputs."""
    from models import build_model

    model = build_model(f"graphs/ablations/{graph}").eval()  # building also runs a checked 64 px forward
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 96, 96))
    batch, queries, box = out["pred_boxes"].shape  # queries are capped by the anchors of a small image
    assert (batch, box) == (1, 4) and out["pred_logits"].shape == (1, queries, 80)
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_boxes"]).all()
