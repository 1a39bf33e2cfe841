"""The fusion batch: what the generic contract cannot see. Reference values are computed here
independently (loops, explicit convs, hand algebra) or were recorded from the authors' code."""
import math

import pytest
import torch
import torch.nn.functional as F

from blocks.attention.cdfa import haar_split
from blocks.attention.fsa import FSA
from blocks.attention.mca import MCA
from blocks.backbone.log_stem import gaussian_kernel, log_kernel
from blocks.downsample.lawds import LAWDS
from blocks.neck.csfcn import CSFCN
from blocks.neck.full_pad_tunnel import FullPAD_Tunnel
from blocks.neck.gdsa_fusion import neighborhood_av, relative_bias
from blocks.neck.hyper_ace import HyperACE
from blocks.neck.hyper_compute import HyperCompute
from blocks.neck.injection_multi_sum_auto_pool import InjectionMultiSum_Auto_pool
from blocks.neck.msam import MSAM
from blocks.neck.pst import PST
from blocks.registry import ChannelError


def test_fsa_with_unit_filter_passes_the_input_scaled_by_the_inverse_root_of_its_size():
    # ortho forward FFT, unnormalised inverse (the authors' pairing): an all-pass filter gives x / sqrt(HW)
    fsa = FSA(4, ratio=3)
    with torch.no_grad():
        fsa.filter.zero_()
        fsa.filter[..., 0] = 1.0
    x = torch.randn(2, 4, 8, 10)
    torch.testing.assert_close(fsa.frequency_filter(x), x / math.sqrt(80), atol=1e-6, rtol=1e-5)


def test_fsa_zero_filter_removes_exactly_the_centred_low_frequency_box():
    fsa = FSA(3, ratio=2)
    with torch.no_grad():
        fsa.filter.zero_()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
    spectrum[..., 2:6, 2:6] = 0                      # the 2r x 2r box around the centre (4, 4)
    expected = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
    torch.testing.assert_close(fsa.frequency_filter(x.float()), expected.float(), atol=1e-6, rtol=1e-5)


def test_fsa_images_of_a_batch_do_not_mix():
    # the authors' fftshift over every dim rolls the batch: one image's output then depends on another
    fsa = FSA(4, ratio=2).eval()
    x = torch.randn(2, 4, 8, 8)
    changed = x.clone()
    changed[1] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(fsa(x)[0], fsa(changed)[0])


def test_cdfa_haar_split_equals_the_stride_one_haar_filters():
    x = torch.randn(2, 3, 6, 5)
    filters = torch.tensor([[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]],
                           dtype=torch.float32).unsqueeze(1).repeat(3, 1, 1, 1)
    bands = F.conv2d(F.pad(x, [0, 1, 0, 1]), filters, groups=3).reshape(2, 3, 4, 6, 5) / 4
    background, foreground = haar_split(x)
    torch.testing.assert_close(background, bands[:, :, 0])
    torch.testing.assert_close(foreground, bands[:, :, 1:].sum(2))


def test_mca_matches_numbers_recorded_from_the_authors_code():
    # the plug-in's attention/MCA.py run on these weights (seed 0) and this input
    torch.manual_seed(0)
    mca = MCA(8, num_heads=2).eval()
    x = torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        y = mca(x)
    assert y.sum().item() == pytest.approx(-2.6160545349121094, abs=1e-4)
    torch.testing.assert_close(y[0, 3, 2, :3], torch.tensor([0.3541240692138672, 0.07513118535280228, 0.061544064432382584]),
                               atol=1e-5, rtol=1e-5)


def test_mca_rejects_channels_that_heads_do_not_divide():
    with pytest.raises(ChannelError, match="divisible by num_heads=8"):
        MCA(12)


def test_hyper_ace_matches_numbers_recorded_from_the_authors_code():
    torch.manual_seed(0)
    block = HyperACE([16, 16, 16], 32).eval()
    xs = [torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)]
    with torch.no_grad():
        y = block(xs)
    assert y.shape == (1, 32, 4, 4)
    assert y.sum().item() == pytest.approx(0.021820545196533203, abs=1e-5)
    torch.testing.assert_close(y[0, 5, 1, :3], torch.tensor([0.00041840484482236207, -0.004435413051396608, -0.030657688155770302]),
                               atol=1e-6, rtol=1e-4)


def test_lawds_weights_the_four_quadrant_positions_as_the_authors_code():
    torch.manual_seed(0)
    block = LAWDS(16, 16).eval()
    x = torch.randn(1, 16, 8, 6)
    with torch.no_grad():
        weights, candidates, out = block.attention(x), block.ds_conv(x), block(x)
    expected = torch.zeros(1, 16, 4, 3)
    for c in range(16):
        for i in range(4):
            for j in range(3):
                logits = torch.stack([weights[0, c, i + (s // 2) * 4, j + (s % 2) * 3] for s in range(4)])
                expected[0, c, i, j] = (logits.softmax(0) * candidates[0, [s * 16 + c for s in range(4)], i, j]).sum()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_lawds_rejects_too_few_channels_for_its_groups():
    with pytest.raises(ChannelError, match="c1 // group"):
        LAWDS(8, 16)


def test_log_stem_kernels():
    log = log_kernel(7, 1.0)
    assert log.sum().abs() < 1e-6 and log.abs().sum().item() == pytest.approx(1.0)
    assert log[3, 3] == log.max() > 0          # the negated Laplacian of Gaussian peaks at the centre
    ax = torch.arange(-2, 3, dtype=torch.float32)
    gauss = torch.exp(-(ax[:, None] ** 2 + ax[None] ** 2) / (2 * 0.5 ** 2))
    torch.testing.assert_close(gaussian_kernel(5, 0.5), gauss / gauss.sum())


def _windows_loop(attn, value, k):
    b, g, h, w, c = value.shape
    out = torch.zeros_like(value)
    for y in range(h):
        top = min(max(y - k // 2, 0), h - k)
        for x in range(w):
            left = min(max(x - k // 2, 0), w - k)
            window = value[:, :, top:top + k, left:left + k].reshape(b, g, k * k, c)
            out[:, :, y, x] = (attn[:, :, y, x, :, None] * window).sum(2)
    return out


def test_neighbourhood_attention_matches_a_loop_over_windows_kept_inside_the_map():
    attn = torch.randn(2, 3, 7, 9, 25).softmax(-1)
    value = torch.randn(2, 3, 7, 9, 4)
    torch.testing.assert_close(neighborhood_av(attn, value, 5), _windows_loop(attn, value, 5), atol=1e-5, rtol=1e-5)


def test_relative_bias_indexes_the_key_minus_query_offset():
    k, h, w = 3, 5, 4
    table = torch.randn(2, 2 * k - 1, 2 * k - 1)
    bias = relative_bias(table, h, w, k)
    for y in range(h):
        top = min(max(y - 1, 0), h - k)
        for x in range(w):
            left = min(max(x - 1, 0), w - k)
            for a in range(k):
                for b in range(k):
                    expected = table[:, top + a - y + k - 1, left + b - x + k - 1]
                    torch.testing.assert_close(bias[:, y, x, a * k + b], expected)


def test_csfcn_spatial_calibration_starts_as_the_sum_of_both_maps():
    # zero-initialised offset head: identity sampling and unit gates, so SFC = up(low) + high
    block = CSFCN([16, 8], 8).eval()
    low, high = torch.randn(1, 16, 4, 4), torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        calibrated, fused = block([low, high])
        sfc = block.spatial
        expected = F.interpolate(sfc.low(calibrated), size=(8, 8), mode="bilinear", align_corners=True) + sfc.high(high)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def test_hyper_compute_with_isolated_vertices_is_a_residual_linear_layer():
    # positions far apart: each hyperedge holds only its own vertex, so messages return fc(x) unchanged
    block = HyperCompute(2, threshold=0.5).eval()
    x = torch.tensor([[[[0.0, 10.0, 20.0]], [[0.0, -10.0, 5.0]]]])
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        expected = block.act(block.norm((block.fc(tokens) + tokens).transpose(1, 2).reshape(1, 2, 1, 3)))
        torch.testing.assert_close(block(x), expected)


def test_full_pad_tunnel_adds_the_gated_second_input():
    tunnel = FullPAD_Tunnel()
    x, y = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(tunnel([x, y]), x)            # the gate starts at 0
    with torch.no_grad():
        tunnel.gate.fill_(0.5)
    torch.testing.assert_close(tunnel([x, y]), x + 0.5 * y)


def test_injection_checks_the_global_split_against_its_input():
    with pytest.raises(ChannelError, match="must sum to the global map's 32 channels"):
        InjectionMultiSum_Auto_pool([16, 32], 16, [8, 16], 0)


def test_msam_level_sets_the_output_resolution():
    xs = [torch.randn(1, 8, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    for level in range(4):
        assert MSAM([8] * 4, 8, level=level).eval()(xs).shape[-2:] == xs[level].shape[-2:]


def test_pst_sparse_refinement_is_deterministic_at_inference():
    torch.manual_seed(0)
    block = PST([32, 32], 64, k=2).eval()
    xs = [torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]
    with torch.no_grad():
        torch.testing.assert_close(block(xs), block(xs))
    with pytest.raises(ChannelError, match="multiple of 32"):
        PST([32, 32], 48)
