"""D-FINE / DEIM graphs: build, run, and count exactly like the official models.

Reference counts come from the official implementations run outside the repo
(tests/data/official_models.json, a copy of the project's reference figures); eval outputs were compared there too (see models/convert.py)."""
import json
import math
from pathlib import Path

import pytest
import torch

from metrics.flops import count_params
from blocks.backbone._hgnetv2 import FrozenBatchNorm2d
from blocks.backbone.hg_stage import HGStage
from blocks.backbone.hg_stem import HGStem
from blocks.backbone.hgnetv2 import HGNetv2
from blocks.encoder.aifi import AIFI, sincos_pos_embed_2d
from models import build_model
from core.errors import CheckpointError, GraphError

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"
REFERENCE = Path(__file__).resolve().parent / "data/official_models.json"  # the official zoos' figures
NAMES = [f"{family}-{size}" for family in ("dfine", "deim") for size in "nsmlx"]
TARGETS = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])}] * 2


def graph(name: str) -> Path:
    return GRAPHS / name.split("-")[0] / f"{name}.yaml"


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())["models"]


@pytest.mark.parametrize("name", NAMES)
def test_params_equal_official_count(name, reference):
    model = build_model(graph(name), check=False)
    assert count_params(model) == reference[name]["params"]


@pytest.mark.parametrize("name", ["dfine-n", "dfine-s", "deim-l"])
def test_params_deploy_equal_official_count(name, reference):
    model = build_model(graph(name), check=False).deploy(official=True)
    assert count_params(model) == reference[name]["params_deploy"]


def test_dfine_large_freezes_stem_and_norms_but_deim_large_trains_everything():
    dfine, deim = build_model(graph("dfine-l"), check=False), build_model(graph("deim-l"), check=False)
    backbone = dfine.layers[:5]
    assert not any(p.requires_grad for p in backbone[0].parameters())          # freeze_at 0: the stem
    assert all(p.requires_grad for p in backbone[1].parameters())               # stem only
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    assert all(p.requires_grad for p in deim.layers[:5].parameters())
    # the BN affine terms are the whole difference (official: 31289848 - 31244152)
    assert count_params(deim) - count_params(dfine) == 45696


@pytest.mark.parametrize("name", ["dfine-n", "dfine-s"])
def test_forward_backward_at_160(name):
    torch.manual_seed(0)
    model = build_model(graph(name), imgsz=160, check=False).train()
    out = model(torch.rand(2, 3, 160, 160), TARGETS)
    assert out["pred_logits"].shape[:1] == (2,) and out["pred_logits"].shape[-1] == 80
    assert out["pred_boxes"].shape[-1] == 4 and "aux_outputs" in out and "dn_outputs" in out
    (out["pred_logits"].sum() + out["pred_boxes"].sum()).backward()
    stem, encoder = model.layers[0], model.layers[5]
    assert stem.stem1.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("name", ["dfine-n", "dfine-s"])
def test_deploy_keeps_backbone_and_encoder_outputs(name):
    torch.manual_seed(0)
    model = build_model(graph(name), imgsz=160, check=False).eval()
    for m in model.modules():  # non-trivial BN statistics, so folding them is really exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    images = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        before = model.run(images, taps=(5,))[1][5]
        after = model.deploy().run(images, taps=(5,))[1][5]
    assert any(hasattr(m, "conv") and not hasattr(m, "conv1") for m in model.layers[5].modules()
               if type(m).__name__ == "RepVggBlock")
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_other_input_sizes_run():
    model = build_model(graph("dfine-n"), check=False).eval()
    with torch.no_grad():
        for height, width in [(320, 480), (224, 160)]:
            out = model(torch.rand(1, 3, height, width))
            tokens = (height // 16) * (width // 16) + (height // 32) * (width // 32)
            assert out["pred_logits"].shape == (1, min(300, tokens), 80)
            assert torch.isfinite(out["pred_boxes"]).all()


def test_ablations_equal_their_base_graph_params(reference):
    rows = build_model(GRAPHS / "ablations/dfine-s-encoder-rows.yaml", check=False)
    assert count_params(rows) == reference["dfine-s"]["params"]
    one_backbone_row = build_model(GRAPHS / "ablations/dfine-n-hgnetv2-block.yaml", check=False)
    assert count_params(one_backbone_row) == reference["dfine-n"]["params"]
    assert count_params(one_backbone_row.deploy(official=True)) == reference["dfine-n"]["params_deploy"]


def test_sincos_embedding_matches_hand_values():
    # dim 4: one frequency (1.0) per quarter -> [sin x, cos x, sin y, cos y]
    pos = sincos_pos_embed_2d(width=3, height=2, dim=4)
    assert pos.shape == (1, 6, 4)
    x, y = 2.0, 1.0   # the last pixel
    expected = torch.tensor([math.sin(x), math.cos(x), math.sin(y), math.cos(y)])
    # the official layout flattens a (w, h) meshgrid: index = x * height + y
    torch.testing.assert_close(pos[0, int(x) * 2 + int(y)], expected)


def test_aifi_caches_eval_size_and_computes_other_sizes():
    aifi = AIFI(32, nhead=4, dim_feedforward=64, stride=32, eval_spatial_size=[128, 96]).eval()
    assert aifi.pos_embed.shape == (1, 4 * 3, 32)
    torch.testing.assert_close(aifi.position_embedding(4, 3, aifi.pos_embed), sincos_pos_embed_2d(3, 4, 32))
    with torch.no_grad():
        assert aifi(torch.rand(1, 32, 5, 7)).shape == (1, 32, 5, 7)


def test_hgnetv2_rows_load_local_pretrained_weights(tmp_path):
    torch.manual_seed(0)
    whole = HGNetv2(3, "B0", use_lab=True, freeze_at=-1, freeze_norm=False)
    path = tmp_path / "PPHGNetV2_B0_stage1.pth"
    torch.save(whole.state_dict(), path)
    stem = HGStem(3, 16, 16, use_lab=True, pretrained=str(path))
    stage = HGStage(256, 64, 512, 2, 3, light_block=True, kernel_size=5, use_lab=True, pretrained=str(path))
    torch.testing.assert_close(stem.stem1.conv.weight, whole.stem.stem1.conv.weight)
    torch.testing.assert_close(stage.blocks[1].aggregation[0].conv.weight, whole.stages[2].blocks[1].aggregation[0].conv.weight)
    frozen = HGStage(256, 64, 512, 2, 3, light_block=True, kernel_size=5, use_lab=True, freeze_norm=True,
                     pretrained=str(path))
    torch.testing.assert_close(frozen.downsample.bn.running_var, whole.stages[2].downsample.bn.running_var)
    with pytest.raises(CheckpointError, match="not found"):
        HGStem(3, 16, 16, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="fit"):
        HGStem(3, 24, 32, pretrained=str(path))    # a B1 stem does not fit B0 weights


def test_whole_hgnetv2_block_matches_rows_and_official_freezing():
    assert count_params(HGNetv2(3, "B4", freeze_at=0, freeze_norm=True)) == 13507680   # official D-FINE-L backbone
    net = HGNetv2(3, "B0", use_lab=True, freeze_at=1, freeze_stem_only=False, freeze_norm=False)
    assert not any(p.requires_grad for p in net.stages[1].parameters())
    assert all(p.requires_grad for p in net.stages[2].parameters())


def test_encoder_with_strides_not_matching_its_inputs_fails_at_parse():
    import yaml
    spec = yaml.safe_load(graph("dfine-n").read_text())
    spec["encoder"][0][3]["feat_strides"] = [16]
    with pytest.raises(GraphError, match="feat_strides"):
        build_model(spec, check=False)
