"""Focused checks for the conv / upsample / downsample zoo: re-parameterisation equalities and small
cases computed by hand. The generic contract test covers shapes, channels, FLOPs and backward."""
import copy
from pathlib import Path

import pytest
import torch

import torch.nn.functional as F
import yaml

from blocks.conv._dcn_core import deform_sample
from blocks.conv._haar import haar_forward, haar_inverse
from blocks.conv.dbb import DBB
from blocks.conv.dcnv2 import DCNv2
from blocks.conv.dcnv4 import DCNv4
from blocks.conv.dilated_reparam_conv import DilatedReparamConv
from blocks.conv.rep_conv import RepConv
from blocks.conv.wtconv import WTConv
from blocks.downsample.spd_conv import SPDConv
from blocks.downsample.wavelet_pool import WaveletPool
from blocks.upsample.carafe import CARAFE
from blocks.upsample.dysample import DySample
from blocks.upsample.wavelet_un_pool import WaveletUnPool
from models import build_model
from blocks.common import fuse_modules


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and weights, so a fuse that ignores a branch or a BN cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3 + (1.0 if name.endswith("weight") and tensor.dim() == 1 else 0.0))
    return module.eval()


def _fused_equal(module: torch.nn.Module, x: torch.Tensor):
    reference = module(x)
    fused = fuse_modules(copy.deepcopy(module))
    fused.fuse()  # fuse_modules visits children only; the block itself last, as a Detector would
    torch.testing.assert_close(fused(x), reference, atol=1e-4, rtol=1e-4)
    return fused


@pytest.mark.parametrize("c1, c2, k, s, g", [(8, 8, 3, 1, 1), (8, 16, 3, 2, 1), (8, 8, 3, 1, 2)])
def test_rep_conv_fuses_to_one_conv_with_equal_output(c1, c2, k, s, g):
    block = _randomise(RepConv(c1, c2, k, s, g))
    assert (block.identity is not None) == (c1 == c2 and s == 1)
    fused = _fused_equal(block, torch.randn(2, c1, 11, 13))
    assert isinstance(fused.reparam, torch.nn.Conv2d) and not hasattr(fused, "dense")


@pytest.mark.parametrize("c1, c2, k, s, g", [(8, 16, 3, 1, 1), (8, 8, 5, 2, 1), (8, 8, 3, 1, 8), (8, 16, 3, 1, 4)])
def test_dbb_fuses_four_branches_into_one_conv(c1, c2, k, s, g):
    block = _randomise(DBB(c1, c2, k, s, g))
    fused = _fused_equal(block, torch.randn(2, c1, 12, 9))  # odd sizes exercise the BN-value padding
    assert [type(m).__name__ for m in fused.children()] == ["SiLU", "Conv2d"]


@pytest.mark.parametrize("k", [5, 7, 13])
def test_dilated_reparam_merges_dilated_branches_into_large_kernel(k):
    block = _randomise(DilatedReparamConv(8, k))
    fused = _fused_equal(block, torch.randn(1, 8, 20, 20))
    assert fused.reparam.kernel_size == (k, k) and fused.reparam.dilation == (1, 1)


def test_haar_of_one_cell_matches_hand_computation():
    cell = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # LL = (1+2+3+4)/2, LH = (1+2-3-4)/2, HL = (1-2+3-4)/2, HH = (1-2-3+4)/2
    assert haar_forward(cell).flatten().tolist() == [5.0, -2.0, -1.0, 0.0]


def test_wavelet_pool_then_unpool_is_lossless():
    x = torch.randn(2, 3, 8, 12)
    pooled = WaveletPool(3)(x)
    assert pooled.shape == (2, 12, 4, 6)
    # channel 4c..4c+3 are the bands of input channel c; LL is twice the 2x2 mean
    torch.testing.assert_close(pooled[:, 4], 2 * torch.nn.functional.avg_pool2d(x[:, 1:2], 2)[:, 0])
    torch.testing.assert_close(WaveletUnPool(12)(pooled), x)


def test_wtconv_with_identity_filters_matches_the_cascade_by_hand():
    """Identity band filters at scale 1, zero base conv. Level 2 rebuilds LL1 exactly, and the paper
    adds that to level 1's own (identity-filtered) LL1, so the output is x + IWT(LL1, 0, 0, 0)."""
    block = WTConv(4, k=3, wt_levels=2)
    with torch.no_grad():
        block.base.weight.zero_()
        block.base.bias.zero_()
        for conv, scale in zip(block.band_convs, block.band_scales):
            conv.weight.zero_()
            conv.weight[:, 0, 1, 1] = 1.0
            scale.fill_(1.0)
    x = torch.randn(1, 4, 12, 10)  # 12x10 -> 6x5 -> odd level padded and cropped back
    low = haar_forward(x)[:, :, :1]
    expected = x + haar_inverse(torch.cat((low, torch.zeros_like(low).expand(-1, -1, 3, -1, -1)), dim=2))
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_spd_conv_space_to_depth_order():
    block = SPDConv(1, 4, k=1).eval()
    with torch.no_grad():  # a 1x1 identity conv exposes the space-to-depth layout
        block.conv.conv.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
        block.conv.norm = torch.nn.Identity()
        block.conv.act = torch.nn.Identity()
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = block(x)
    assert y[0, :, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]  # (even,even), (odd,even), (even,odd), (odd,odd)


def test_deform_sample_matches_official_dcnv3_reference():
    """Numbers from InternImage's dcnv3_core_pytorch (run outside the repo) on the same inputs:
    stride 2, 2 groups, offset_scale 1.5, points sampled partly outside the map."""
    value = (torch.arange(80, dtype=torch.float32).reshape(1, 4, 5, 4) % 7) / 3
    offset = torch.linspace(-1.7, 2.3, 216).reshape(1, 2, 3, 36)
    mask = torch.linspace(0.05, 0.95, 108).reshape(1, 2, 3, 18)
    out = deform_sample(value, offset, mask, k=3, stride=2, pad=1, dilation=1, groups=2, offset_scale=1.5)
    official = [0.0, 0.00658, 0.10717, 0.16076, 0.45409, 0.58688, 1.30332, 0.7116, 0.64139, 0.97392, 1.5175,
                1.79475, 2.32804, 2.28086, 3.1809, 3.18887, 2.45074, 1.10567, 0.87116, 1.33222, 0.04312, 0.0, 0.0, 0.0]
    torch.testing.assert_close(out.flatten(), torch.tensor(official), atol=1e-4, rtol=0)


def test_dcnv2_at_init_is_half_a_plain_conv():
    """Zero-initialised offset/mask conv: no offsets, every modulation sigmoid(0) = 0.5."""
    block = DCNv2(4, 6, 3, 2).eval()
    x = torch.randn(2, 4, 9, 8)
    expected = block.act(block.norm(0.5 * F.conv2d(x, block.weight, None, 2, 1)))
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_dcnv4_offset_and_weight_layout():
    """Per group the linear layer gives 2P offsets (x, y per point) then P weights, with no softmax:
    offsets (+1, 0) everywhere and weight 2 on the centre tap read the right neighbour, doubled."""
    block = DCNv4(4, 4, 3, groups=2, act=None).eval()
    block.norm = torch.nn.Identity()
    with torch.no_grad():
        for proj in (block.value_proj, block.output_proj):
            proj.weight.copy_(torch.eye(4))
            proj.bias.zero_()
        bias = torch.zeros(2, 27)
        bias[:, 0:18:2] = 1.0        # x offsets of the 9 points
        bias[:, 18 + 4] = 2.0        # weight of the centre point
        block.offset_mask.bias.zero_()
        block.offset_mask.bias[:54] = bias.flatten()
    x = torch.randn(1, 4, 5, 6)
    expected = 2 * F.pad(x[..., 1:], (0, 1))  # x[..., j + 1], zero beyond the right border
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_dysample_with_zero_offsets_is_bilinear_upsampling():
    block = DySample(8, scale=2)
    with torch.no_grad():
        block.offset.weight.zero_()
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(block(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
                               atol=1e-5, rtol=1e-5)


def _carafe_by_loops(x, kernels, k, s):
    """The paper's definition: output (i, j) = sum over the k x k taps around source pixel (i//s, j//s)."""
    b, c, h, w = x.shape
    padded = F.pad(x, [k // 2] * 4)
    out = torch.zeros(b, c, s * h, s * w)
    for i in range(s * h):
        for j in range(s * w):
            patch = padded[:, :, i // s:i // s + k, j // s:j // s + k].reshape(b, c, k * k)
            out[:, :, i, j] = (patch * kernels[:, None, :, i, j]).sum(-1)
    return out


def test_carafe_matches_the_reassembly_definition():
    torch.manual_seed(0)
    block = CARAFE(4, scale=2, up_kernel=3, compressed=8)
    with torch.no_grad():
        block.encoder.weight.normal_(std=0.5)
    x = torch.randn(2, 4, 4, 5)
    # kernel prediction as the paper writes it: pixel shuffle, then softmax over the k*k taps
    kernels = F.pixel_shuffle(block.encoder(block.compressor(x)), 2).softmax(dim=1)
    torch.testing.assert_close(block(x), _carafe_by_loops(x, kernels, 3, 2), atol=1e-5, rtol=1e-5)


def test_ablation_encoder_rows_equal_deim_n_hybrid_encoder():
    """The up/downsample ablation graphs spell DEIM-N's HybridEncoder out as rows 5-14; with the
    SCDown row put back and the same weights, that graph must give DEIM-N's output exactly."""
    spec = yaml.safe_load(Path("graphs/ablations/downsample/adown.yaml").read_text())
    spec["encoder"][7] = [-1, 1, "SCDown", [128, 3, 2]]
    torch.manual_seed(0)
    single = build_model("graphs/deim/deim-n.yaml", imgsz=[64, 64]).eval()
    rows = build_model(spec, imgsz=[64, 64]).eval()
    # HybridEncoder piece -> row index of the spelled-out graph
    pieces = {"input_proj.0.": 5, "input_proj.1.": 6, "encoder.0.": 7, "lateral_convs.0.": 8, "fpn_blocks.0.": 11,
              "downsample_convs.0.0.": 12, "pan_blocks.0.": 14}
    mapped = {}
    for key, value in single.state_dict().items():
        if key.startswith("layers.5."):
            rest = key[len("layers.5."):]
            piece = next(p for p in pieces if rest.startswith(p))
            key = f"layers.{pieces[piece]}.{rest[len(piece):]}"
        elif key.startswith("layers.6."):
            key = "layers.15." + key[len("layers.6."):]
        mapped[key] = value
    rows.load_state_dict(mapped)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, actual = single(x), rows(x)
    torch.testing.assert_close(actual["pred_logits"], expected["pred_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(actual["pred_boxes"], expected["pred_boxes"], atol=1e-5, rtol=0)
