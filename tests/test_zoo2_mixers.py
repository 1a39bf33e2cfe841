"""Focused checks for the mixers batch: MetaFormer nested vs spelled out, scan routes by hand, numbers
pinned from the authors' code, batch independence where the released code mixed images, parameter
counts from YOLOv5's own model summary, and the channel errors."""
import math

import pytest
import torch

from blocks.registry import ChannelError, blocks
from core.errors import GraphError
from models import build_model


def rows_graph(rows):
    return {"nc": 2, "imgsz": [64, 64], "backbone": [[-1, 1, "Conv", [16, 3, 2]], *rows]}


def fill(module):
    """Every parameter (but A_log and the dt bias) = 0.2 * sin(0.7 i + 0.1 k): i its flat index, k its rank
    in name order; the same scheme set the authors' modules when the pinned numbers were recorded."""
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(module.named_parameters())):
            if "A_log" in name or ("dt_proj" in name and "bias" in name):
                continue
            p.copy_(0.2 * torch.sin(0.7 * torch.arange(p.numel(), dtype=torch.float64) + 0.1 * k).reshape(p.shape).float())


def wave(*shape):
    return torch.sin(0.3 * torch.arange(math.prod(shape), dtype=torch.float64)).reshape(shape).float()


# --- MetaFormer -------------------------------------------------------------------------------------------

NESTED = [[-1, 1, "MetaFormer", {"mixer": {"module": "SHSA", "args": {"qk_dim": 8}},
                                 "mlp": {"module": "ConvolutionalGLU", "args": {"hidden_features": 32}},
                                 "layer_scale_init": None}]]
SPELLED_OUT = [[-1, 1, "nn.GroupNorm", [1, 16]],                      # 1 norm1
               [-1, 1, "SHSA", {"qk_dim": 8}],                       # 2 token mixer
               [[-1, 0], 1, "Add", []],                              # 3 x + mixer(norm1(x))
               [-1, 1, "nn.GroupNorm", [1, 16]],                      # 4 norm2
               [-1, 1, "ConvolutionalGLU", {"hidden_features": 32}],  # 5 channel MLP
               [[-1, 3], 1, "Add", []]]                              # 6 x + mlp(norm2(x))


def test_nested_metaformer_equals_the_same_network_spelled_out_as_rows():
    torch.manual_seed(0)
    nested = build_model(rows_graph(NESTED)).eval()
    rows = build_model(rows_graph(SPELLED_OUT)).eval()
    block = nested.layers[1]
    assert type(block.token_mixer).__name__ == "SHSA" and type(block.mlp).__name__ == "ConvolutionalGLU"
    rows.layers[0].load_state_dict(nested.layers[0].state_dict())
    for index, part in ((1, block.norm1), (2, block.token_mixer), (4, block.norm2), (5, block.mlp)):
        rows.layers[index].load_state_dict(part.state_dict())
    assert sum(p.numel() for p in nested.parameters()) == sum(p.numel() for p in rows.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(nested(x), rows(x), rtol=0, atol=0)


@pytest.mark.parametrize("mlp", sorted(s.name for s in blocks("mlp")))
def test_every_zoo_mlp_serves_as_metaformer_channel_mlp(mlp):
    model = build_model(rows_graph([[-1, 1, "MetaFormer", {"mixer": {"module": "GSA", "args": {"num_heads": 4}},
                                                           "mlp": {"module": mlp}}]]))
    from blocks.registry import get
    assert isinstance(model.layers[1].mlp, get(mlp).cls)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 16, 32, 32)


def test_metaformer_block_is_metaformer_with_its_pooling_form():
    from blocks.transformer.meta_former import MetaFormer, Pooling
    from blocks.transformer.meta_former_block import MetaFormerBlock
    torch.manual_seed(0)
    a = MetaFormerBlock(16)
    torch.manual_seed(0)
    b = MetaFormer(16)
    assert isinstance(a.token_mixer, Pooling) and list(a.state_dict()) == list(b.state_dict())
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # PoolFormer's layer scale starts at 1e-5: the block starts near the identity
    assert (a(x) - x).abs().max() < 1e-3


def test_c3_takes_an_inner_block_and_matches_yolov5n_parameter_counts():
    # YOLOv5n model summary (ultralytics/yolov5, yolov5n.yaml): C3 [32, 32, 1] 4800 params, C3 [64, 64, 2] 29184
    from blocks.neck.c3 import C3
    assert sum(p.numel() for p in C3(32, 32, 1).parameters()) == 4800
    assert sum(p.numel() for p in C3(64, 64, 2).parameters()) == 29184
    model = build_model(rows_graph([[-1, 2, "C3", {"c2": 32, "block": {"module": "RepViTBlock", "args": {}}}]]))
    assert [type(m).__name__ for m in model.layers[1].m] == ["RepViTBlock", "RepViTBlock"]
    assert model.layers[1].m[0].channel_mixer[0].conv.in_channels == 16   # hidden = 32 * 0.5


def test_manet_takes_an_inner_block_from_a_row():
    model = build_model(rows_graph([[-1, 2, "MANet", {"c2": 32, "block": {"module": "FasterBlock", "args": {}}}]]))
    assert [type(m).__name__ for m in model.layers[1].m] == ["FasterBlock", "FasterBlock"]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 32, 32, 32)


# --- scan routes ------------------------------------------------------------------------------------------

def test_savss_routes_by_hand_on_a_3x4_grid():
    from blocks.mamba.savss import sass_routes
    orders, directions = sass_routes(3, 4)
    # odd height: the row snake starts bottom-right, runs left, climbs, runs right, ...
    assert orders[0].tolist() == [11, 10, 9, 8, 4, 5, 6, 7, 3, 2, 1, 0]
    assert directions[0].tolist() == [0, 2, 2, 2, 3, 1, 1, 1, 3, 2, 2, 2]      # 1 right, 2 left, 3 up
    assert orders[1].tolist() == [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3]        # column snake from the top-left
    # diagonals alternate: (0,0) | (1,0) (0,1) | (0,2) (1,1) (2,0) | (2,1) (1,2) (0,3) | (1,3) (2,2) | (2,3)
    assert orders[2].tolist() == [0, 4, 1, 2, 5, 8, 9, 6, 3, 7, 10, 11]
    assert orders[3].tolist() == [3, 7, 2, 1, 6, 11, 10, 5, 0, 4, 9, 8]        # the same, mirrored left-right
    for route in orders:
        assert sorted(route.tolist()) == list(range(12))


def test_mair_nested_s_routes_by_hand():
    from blocks.mamba.mair import nss_routes
    routes = nss_routes(2, 4, 2)
    # stripes two wide: rows 0-1 of columns 0-1 as a snake, then columns 2-3 entered from the bottom
    assert routes[0].tolist() == [0, 1, 5, 4, 6, 7, 3, 2]
    assert routes[1].tolist() == [7, 6, 2, 3, 1, 0, 4, 5]                      # the map turned 180 degrees
    assert routes[2].tolist() == [0, 4, 5, 1, 2, 6, 7, 3]                      # the transposed map: one stripe
    for route in nss_routes(5, 7, 3):
        assert sorted(route.tolist()) == list(range(35))


# --- numbers from the authors' code (deterministic weights, see fill) -------------------------------------

def test_dilated_mwsa_matches_numbers_from_tbsn():
    from blocks.transformer.dilated_mwsa import DilatedMWSA
    m = DilatedMWSA(16, 2, 4, 0.5, 8)
    fill(m)
    with torch.no_grad():
        y = m(wave(1, 16, 8, 8))
    # nagejacob/TBSN network/tbsn.py DilatedOCA(16, 4, 0.5, 2, 8) with the same weights and input
    torch.testing.assert_close(y[0, :4, 1, 2], torch.tensor([0.0276617799, 0.0229044631, -0.0183623489, -0.0303597469]),
                               rtol=1e-4, atol=1e-6)
    assert y.abs().sum().item() == pytest.approx(17.1433392, rel=1e-5)


def test_mair_matches_numbers_from_its_authors():
    from blocks.mamba.mair import MaIR
    torch.manual_seed(0)
    m = MaIR(16, d_state=4, scan_len=4)
    fill(m)
    with torch.no_grad():
        y = m(wave(1, 16, 6, 10))
    # XLearning-SCU/2025-CVPR-MaIR VMM(16, d_state 4, expand 1.5), scan_len 4, mamba_ssm's selective_scan_ref
    torch.testing.assert_close(y[0, :4, 2, 3], torch.tensor([0.3164561987, -0.0337320268, -0.2853769064, 0.2966660857]),
                               rtol=1e-4, atol=1e-6)
    assert y.abs().sum().item() == pytest.approx(125.033241, rel=1e-5)


def test_savss_matches_numbers_from_scsegamba_with_its_diagonal_inverse_corrected():
    from blocks.mamba.savss import SAVSS
    torch.manual_seed(0)
    m = SAVSS(16, d_state=4)
    fill(m)
    with torch.no_grad():
        y = m(wave(1, 16, 5, 7))
    # Karl1109/SCSegamba SAVSS_2D(16, d_state 4), mamba_ssm's selective_scan_ref
    torch.testing.assert_close(y[0, :4, 2, 3], torch.tensor([9.303778e-05, -3.491226e-05, -2.896833e-05, 8.807367e-05]),
                               rtol=1e-4, atol=1e-9)
    assert y.abs().sum().item() == pytest.approx(0.0816964433, rel=1e-5)


# --- departures that fix the released code ----------------------------------------------------------------

@pytest.mark.parametrize("name, c", [("MobileMamba", 64), ("SAVSS", 16), ("ASSM", 16), ("CPIA_SA", 32)])
def test_each_image_is_mixed_on_its_own(name, c):
    # the released MobileMamba merge summed one route over the whole batch; no block here may do that
    from blocks.registry import get
    torch.manual_seed(0)
    m = get(name).cls(c).eval()
    x = torch.randn(3, c, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[:1], m(x[:1]), rtol=1e-4, atol=1e-5)


def test_assm_is_deterministic_in_eval_and_samples_routes_in_training():
    from blocks.mamba.assm import ASSM
    torch.manual_seed(0)
    m = ASSM(16, d_state=4, num_tokens=8, inner_rank=8)
    x = torch.randn(1, 16, 6, 6)
    m.eval()
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    m.train()
    assert not torch.equal(m(x), m(x))            # a Gumbel draw per call, as MambaIRv2 trains


def test_rephms_cascade_runs_where_the_released_bookkeeping_failed_and_fuses():
    from blocks.common import fuse_modules
    from blocks.neck.rep_hms import RepHMS
    m = RepHMS(16, 32, width=4, depth=3, kersize=7).eval()
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(fuse_modules(m)(x), y, rtol=1e-4, atol=1e-4)
    assert y.shape == (1, 32, 12, 12)


# --- errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, message", [
    ("GSA", {"num_heads": 7}, "do not split into 7 heads"),
    ("SFA", {"num_heads": 3}, "even head count"),
    ("MSLA", {"num_heads": 3}, "do not split"),
    ("DilatedMWSA", {"window_size": 6, "overlap_ratio": 0.5}, "must be even"),
    ("CSI", {"c2": 30}, "multiple of 4"),
])
def test_bad_channel_arguments_fail_early_with_a_channel_error(name, kwargs, message):
    from blocks.registry import get
    spec = get(name)
    args = {k: v for k, v in kwargs.items() if k != "c2"}
    with pytest.raises(ChannelError, match=message):
        spec.cls(32, kwargs["c2"], **args) if "c2" in kwargs else spec.cls(32, **args)


def test_a_graph_row_with_bad_heads_names_the_row():
    with pytest.raises(GraphError, match="GSA"):
        build_model(rows_graph([[-1, 1, "GSA", {"num_heads": 5}]]))


def test_dffn_names_two_different_papers():
    from blocks.registry import get
    fft, freq = get("DFFN"), get("DFFN_IJCAI")
    assert "CVPR 2023" in fft.citation and "FFTformer" in fft.citation
    assert "IJCAI 2024" in freq.citation and "FreqFormer" in freq.citation
    x = torch.randn(1, 16, 8, 8)
    assert fft.cls(16)(x).shape == freq.cls(16)(x).shape == x.shape
