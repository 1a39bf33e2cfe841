"""RT-DETRv2 and DEIM-RT-DETRv2 graphs: official parameter counts, the official state-dict layout,
eval outputs equal to the official implementation's, and a training step at a small size.

Counts come from tests/data/official_models.json. Layout hashes and output numbers were
recorded by running lyuwenyu/RT-DETR (rtdetrv2_pytorch) and ShihuaHuang95/DEIM outside the repo,
with tests/official_weights.py's fill and image."""
import json
from pathlib import Path

import pytest
import torch

from metrics.flops import count_params
from blocks.backbone._hgnetv2 import FrozenBatchNorm2d
from blocks.backbone.presnet import PResNet
from models import build_model
from models.convert import convert_official
from models.criterion import build_criterion
from tests.official_weights import deterministic_fill, layout_hash, sample_images, to_official_layout

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"
REFERENCE = Path(__file__).resolve().parent / "data/official_models.json"  # the official zoos' figures
SIZES = ["r18", "r34", "r50m", "r50", "r101"]
NAMES = [f"rtdetrv2-{s}" for s in SIZES] + [f"deim-rtdetrv2-{s}" for s in SIZES]
TARGETS = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])},
           {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.4, 0.3, 0.2]])}]


def graph(name: str) -> Path:
    return GRAPHS / ("deim" if name.startswith("deim") else "rtdetrv2") / f"{name}.yaml"


def tiny(name: str) -> dict:
    """The r18 graph shrunk as the recorded official runs were (hidden 64, 2 decoder layers, 30 queries)."""
    spec = build_model(graph(name), check=False).graph_spec
    spec = json.loads(json.dumps(spec))
    spec["imgsz"] = [128, 128]
    spec["encoder"][0][3].update(hidden_dim=64, dim_feedforward=128, nhead=4, depth_mult=0.34)
    spec["decoder"][0][3].update(hidden_dim=64, num_layers=2, num_queries=30, num_points=[2, 2, 2], nhead=4,
                                 dim_feedforward=128)
    return spec


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())["models"]


@pytest.mark.parametrize("name", NAMES)
def test_params_equal_official_count(name, reference):
    assert count_params(build_model(graph(name), check=False)) == reference[name]["params"]


@pytest.mark.parametrize("name", ["deim-rtdetrv2-r18", "deim-rtdetrv2-r50"])
def test_deim_params_deploy_equal_official_count(name, reference):
    assert count_params(build_model(graph(name), check=False).deploy(official=True)) == reference[name]["params_deploy"]


def test_rtdetrv2_r50_freezes_stem_and_norms_and_deim_trains_them():
    rt = build_model(graph("rtdetrv2-r50"), check=False).layers[0]
    deim = build_model(graph("deim-rtdetrv2-r50"), check=False).layers[0]
    assert not any(p.requires_grad for p in rt.conv1.parameters())      # freeze_at 0: the stem only
    assert all(p.requires_grad for p in rt.res_layers.parameters())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in rt.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rt.modules())
    assert all(p.requires_grad for p in deim.parameters())
    # the BN affine terms are the whole difference: official 42943596 - 42891372 plus the 1024
    # parameters DEIM's 3-layer query position head saves (MLP 4-256-256-256 vs 4-512-256)
    assert count_params(deim) - count_params(rt) == 42943596 - 42891372 + 1024


def test_presnet_vd_shapes_and_stage_widths():
    with torch.no_grad():
        out18 = PResNet(3, 18, return_idx=[0, 1, 2, 3], freeze_norm=False).eval()(torch.zeros(1, 3, 64, 64))
        out50 = PResNet(3, 50, return_idx=[1, 3]).eval()(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in out18] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert [tuple(o.shape[1:]) for o in out50] == [(512, 8, 8), (2048, 2, 2)]
    # vd: the downsampling shortcut average-pools before its 1x1 conv; the stem is three 3x3 convs
    model = PResNet(3, 50)
    assert isinstance(model.res_layers[1].blocks[0].short.pool, torch.nn.AvgPool2d)
    assert [c.conv.kernel_size for c in model.conv1] == [(3, 3)] * 3


# (official layout of the full r18 model, official layout of the tiny one, recorded eval outputs)
RECORDED = {
    "rtdetrv2-r18": {
        "full": (536, "1a78d59457ef70fd"), "tiny": (409, "55eff2173d840143"),
        "logits": [[[13.557245, -10.542936, -3.445189, -6.340726], [13.514256, -10.513674, -3.426410, -6.304065],
                    [13.559857, -10.555090, -3.439973, -6.348907]],
                   [[13.556889, -10.542650, -3.444904, -6.341163], [13.513476, -10.514515, -3.426875, -6.305438],
                    [13.560281, -10.555960, -3.442860, -6.353212]]],
        "boxes": [[[0.897769, 0.961060, 0.045476, 0.046589], [0.965720, 0.961047, 0.045480, 0.046580],
                   [0.698945, 0.961059, 0.045471, 0.046588]],
                  [[0.897770, 0.961060, 0.045476, 0.046589], [0.965720, 0.961046, 0.045480, 0.046580],
                   [0.830676, 0.961059, 0.045473, 0.046588]]]},
    "deim-rtdetrv2-r18": {
        "full": (538, "570a7a6296c9bebf"), "tiny": (411, "eb41ea59c151bbcb"),
        "logits": [[[14.211142, -9.533709, -3.205470, -5.789376], [14.177015, -9.504749, -3.183991, -5.756395],
                    [14.212215, -9.545840, -3.201180, -5.796315]],
                   [[14.210805, -9.533409, -3.205423, -5.789783], [14.176334, -9.505726, -3.184532, -5.757869],
                    [14.212781, -9.546747, -3.203763, -5.800774]]],
        "boxes": [[[0.900654, 0.960590, 0.047155, 0.044945], [0.966752, 0.960589, 0.047157, 0.044943],
                   [0.705594, 0.960588, 0.047154, 0.044943]],
                  [[0.900654, 0.960590, 0.047155, 0.044946], [0.966752, 0.960589, 0.047157, 0.044943],
                   [0.835101, 0.960589, 0.047154, 0.044944]]]},
}


@pytest.mark.parametrize("name", RECORDED)
def test_state_dict_layout_is_the_official_one(name):
    assert layout_hash(to_official_layout(build_model(graph(name), check=False))) == RECORDED[name]["full"]


@pytest.mark.parametrize("name", RECORDED)
def test_converted_official_weights_give_the_official_outputs(name):
    model = build_model(tiny(name), check=False).eval()
    official = deterministic_fill(to_official_layout(model))
    assert layout_hash(official) == RECORDED[name]["tiny"]
    # official checkpoints also carry the decoder's anchor buffers, which we recompute
    official["decoder.anchors"], official["decoder.valid_mask"] = torch.zeros(1, 336, 4), torch.ones(1, 336, 1)
    converted, report = convert_official(official, model, strict=True)
    assert report.mapped == len(model.state_dict()) and sorted(report.dropped) == ["decoder.anchors", "decoder.valid_mask"]
    model.load_state_dict(converted)
    with torch.no_grad():
        out = model(sample_images())
    torch.testing.assert_close(out["pred_logits"][:, :3, :4], torch.tensor(RECORDED[name]["logits"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_boxes"][:, :3], torch.tensor(RECORDED[name]["boxes"]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["rtdetrv2-r18", "deim-rtdetrv2-r18"])
def test_training_step_at_128(name):
    torch.manual_seed(0)
    model = build_model(graph(name), imgsz=128, check=False).train()
    out = model(torch.rand(2, 3, 128, 128), TARGETS)
    assert out["pred_logits"].shape == (2, 300, 80) and out["pred_boxes"].shape == (2, 300, 4)
    assert len(out["aux_outputs"]) == 2 and len(out["enc_aux_outputs"]) == 1
    assert out["dn_meta"]["dn_num_split"][1] == 300 and len(out["dn_outputs"]) == 3
    criterion = build_criterion({
        "type": "RTDETRv2Criterion", "num_classes": 80, "weight_dict": {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2},
        "losses": ["vfl", "boxes"], "alpha": 0.75, "gamma": 2.0,
        "matcher": {"type": "HungarianMatcher", "weight_dict": {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2},
                    "alpha": 0.25, "gamma": 2.0}})
    losses = criterion(out, TARGETS)
    assert {"loss_vfl", "loss_bbox", "loss_giou", "loss_vfl_dn_0", "loss_vfl_enc_0", "loss_vfl_aux_0"} <= set(losses)
    sum(losses.values()).backward()
    backbone, encoder, decoder = model.layers
    assert backbone.conv1.conv1_1.conv.weight.grad.abs().sum() > 0
    assert decoder.denoising_class_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())


def test_deploy_drops_layers_after_eval_idx_with_equal_output():
    spec = tiny("rtdetrv2-r18")
    # 64 px: 8x8 + 4x4 + 2x2 = 84 encoder tokens, all of them queries, so near-tied scores can only reorder them
    spec["imgsz"] = [64, 64]
    spec["decoder"][0][3].update(num_layers=3, eval_idx=1, num_queries=84)
    model = build_model(spec, check=False).eval()
    model.load_state_dict(deterministic_fill(model.state_dict()))
    images = sample_images(size=64)
    with torch.no_grad():
        before = model(images)
        after = model.deploy()(images)
    assert len(model.layers[2].decoder.layers) == 2 and len(model.layers[2].dec_bbox_head) == 2
    # as sets of (logits, box) rows, as tests/test_deploy_equivalence.py compares: near-tied encoder scores
    # may order the queries differently on another CPU
    rows = [torch.cat([out["pred_logits"], out["pred_boxes"]], -1) for out in (before, after)]
    for image in range(rows[0].shape[0]):
        distance = torch.cdist(rows[0][image], rows[1][image], p=float("inf"))
        assert distance.min(1).values.max() < 1e-5 and distance.min(0).values.max() < 1e-5


@pytest.mark.parametrize("name", RECORDED)
def test_flop_count_equals_calflops(name):
    from metrics.flops import count_flops, deployed_copy
    from tests.test_info import calflops_count

    model = deployed_copy(build_model(tiny(name), check=False))
    assert count_flops(model, torch.zeros(1, 3, 128, 128)).flops == calflops_count(model, (1, 3, 128, 128))


@pytest.mark.parametrize("options", [{"cross_attn_method": "discrete"}, {"query_select_method": "agnostic"},
                                     {"query_select_method": "one2many"}, {"learn_query_content": True},
                                     {"num_levels": 4, "num_points": [2, 2, 2, 2]}])
def test_decoder_options_train_and_eval(options):
    from blocks.decoder.rtdetrv2_decoder import RTDETRv2Decoder

    torch.manual_seed(0)
    decoder = RTDETRv2Decoder([16, 32, 32], num_classes=3, hidden_dim=32, num_queries=10, nhead=4, num_layers=2,
                              dim_feedforward=64, num_denoising=6, **{"num_points": [2, 2, 2], **options})
    feats = [torch.rand(2, 16, 16, 16), torch.rand(2, 32, 8, 8), torch.rand(2, 32, 4, 4)]
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2
    out = decoder.train()(feats, targets)
    sum(o.sum() for o in (out["pred_logits"], out["pred_boxes"], out["enc_aux_outputs"][0]["pred_logits"])).backward()
    assert out["enc_meta"]["class_agnostic"] == (options.get("query_select_method") == "agnostic")
    assert out["enc_aux_outputs"][0]["pred_logits"].shape[-1] == (1 if out["enc_meta"]["class_agnostic"] else 3)
    offsets = decoder.decoder.layers[0].cross_attn.sampling_offsets.weight
    assert offsets.requires_grad == (options.get("cross_attn_method") != "discrete")
    assert len(decoder.input_proj) == options.get("num_levels", 3)
    with torch.no_grad():
        assert decoder.eval()(feats)["pred_boxes"].shape == (2, 10, 4)
