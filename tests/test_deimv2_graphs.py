"""DEIMv2 graphs (Atto..X): official parameter counts, train/eval/deploy behaviour at small sizes,
official checkpoint layout (written here by hand from the official module names), local ViT weights.

Outside the repo, official DEIMv2 models (random init, converted with models.convert) gave the same
eval outputs as these graphs: DEIMv2-S elementwise within 1.7e-6, Atto and N the same rows within
1.5e-6 (their query order differs where random-init encoder scores nearly tie)."""
import json
from pathlib import Path

import pytest
import torch

from blocks.backbone.dinov3_stas import DINOv3STAs
from models import build_model
from models.convert import convert_official
from core.errors import CheckpointError
from models.postprocess import PostProcessor

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data/official_models.json"  # the official zoos' figures
# official counts (train / deploy), recorded from the official implementation
OFFICIAL = {"atto": (508985, 494159), "femto": (983945, 962311), "pico": (1539539, 1514285),
            "n": (3600421, 3571527), "s": (9779838, 9707403), "m": (18357750, 18106355),
            "l": (32551214, 32178043), "x": (51211736, 50260163)}
TARGETS = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2]])},
           {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _rows_distance(a, b):
    """Largest distance from a row of `a` to its nearest row of `b` (and back): order-free equality."""
    d = torch.cdist(a, b, p=float("inf"))
    return max(d.min(-1).values.max().item(), d.min(0).values.max().item())


@pytest.mark.parametrize("size", list(OFFICIAL))
def test_graph_matches_official_parameter_counts(size):
    torch.manual_seed(0)
    model = build_model(ROOT / f"graphs/deimv2/deimv2-{size}.yaml", check=False)
    assert _count(model) == OFFICIAL[size][0]
    assert _count(model.deploy(official=True)) == OFFICIAL[size][1]


def test_recorded_counts_equal_the_reference_file():
    models = json.loads(REFERENCE.read_text())["models"]
    assert {s: (models[f"deimv2-{s}"]["params"], models[f"deimv2-{s}"]["params_deploy"]) for s in OFFICIAL} == OFFICIAL


def test_atto_eval_size_and_flops_follow_the_official_model():
    from metrics.flops import count_flops, deployed_copy
    model = build_model(ROOT / "graphs/deimv2/deimv2-atto.yaml", check=False)
    assert model.imgsz == (320, 320)
    flops = count_flops(deployed_copy(model), torch.zeros(1, 3, 320, 320)).flops
    assert abs(flops / 0.7629e9 - 1) < 0.01  # official calflops figure


def _small(path, imgsz=64, nc=2):
    torch.manual_seed(0)
    return build_model(ROOT / path, nc=nc, imgsz=imgsz, check=False)


def test_atto_trains_and_deploys_at_a_small_size():
    model = _small("graphs/deimv2/deimv2-atto.yaml").train()
    out = model(torch.rand(2, 3, 64, 64), TARGETS)
    assert {"aux_outputs", "pre_outputs", "dn_outputs", "enc_aux_outputs"} <= set(out)
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum() + sum(a["pred_logits"].sum() for a in out["aux_outputs"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert sum(g is not None for g in grads) > 0.9 * len(grads)

    images = torch.rand(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before = model(images)
        after = model.deploy()(images)
    for b in range(2):
        rows = [torch.cat([o["pred_logits"][b], o["pred_boxes"][b]], -1) for o in (before, after)]
        assert _rows_distance(*rows) < 1e-4


def test_shared_box_head_is_one_module_and_counted_once():
    decoder = _small("graphs/deimv2/deimv2-atto.yaml").layers[-1]
    heads = decoder.dec_bbox_head
    assert heads[0] is heads[1] is heads[2]
    assert not decoder.decoder.layers[0].use_gateway and hasattr(decoder.decoder.layers[0], "norm2")
    assert not hasattr(decoder, "enc_output") and len(decoder.query_pos_head.layers) == 3


@pytest.mark.parametrize("nc", [1, 2])
def test_postprocessor_keeps_at_most_queries_times_classes(nc):
    model = _small("graphs/deimv2/deimv2-atto.yaml", nc=nc).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    queries = out["pred_logits"].shape[1]
    assert queries * nc < 300
    result = PostProcessor(num_classes=nc, num_top_queries=300)(out, torch.tensor([[640, 480]]))
    assert len(result[0]["scores"]) == queries * nc
    assert result[0]["labels"].max() < nc


def _small_dinov3(name="dinov3_vits16"):
    return {"nc": 2, "imgsz": [64, 64], "backbone": [
        [-1, 1, "DINOv3STAs", {"name": name, "interaction_indexes": [0, 1, 2], "depth": 3, "conv_inplane": 8,
                               "hidden_dim": 32}]],
        "encoder": [[-1, 1, "HybridEncoder", {"feat_strides": [8, 16, 32], "hidden_dim": 32, "nhead": 4,
                                              "dim_feedforward": 64, "expansion": 0.5, "depth_mult": 0.34,
                                              "version": "deimv2", "csp_type": "csp2", "fuse_op": "sum",
                                              "identity_input_proj": True}]],
        "decoder": [[-1, 1, "DEIMv2Decoder", {"feat_strides": [8, 16, 32], "hidden_dim": 32, "nhead": 4,
                                              "num_layers": 2, "num_queries": 20, "dim_feedforward": 64,
                                              "num_denoising": 4, "reg_max": 8}]]}


@pytest.mark.parametrize("name", ["dinov3_vits16", "dinov3_vits16plus"])
def test_small_dinov3_model_trains(name):
    torch.manual_seed(0)
    model = build_model(_small_dinov3(name), check=False).train()
    out = model(torch.rand(2, 3, 64, 64), TARGETS)
    (out["pred_logits"].sum() + out["pred_boxes"].sum()).backward()
    vit = model.layers[0].dinov3
    assert vit.blocks[0].attn.qkv.weight.grad is not None and torch.isfinite(vit.blocks[0].attn.qkv.weight.grad).all()
    assert model.layers[0].sta.stem[0].weight.grad is not None


def test_official_layout_checkpoint_converts_back_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model(_small_dinov3(), check=False).eval()
    sections = {"0": "backbone.", "1": "encoder.", "2": "decoder."}
    official = {sections[k.split(".")[1]] + k.split(".", 2)[2]: v.clone() for k, v in model.state_dict().items()}
    official["decoder.anchors"] = torch.zeros(1)  # the official decoder saves its anchors; they are recomputed
    assert "backbone.dinov3.blocks.0.attn.qkv.bias_mask" in official and "backbone.sta.conv4.1.weight" in official
    torch.manual_seed(1)
    fresh = build_model(_small_dinov3(), check=False).eval()
    converted, report = convert_official(official, fresh, strict=True)
    fresh.load_state_dict(converted)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(images)["pred_boxes"], model(images)["pred_boxes"])
    assert report.dropped == ["decoder.anchors"]


def test_vit_weights_load_from_a_local_file_only(tmp_path):
    torch.manual_seed(0)
    source = DINOv3STAs(name="vit_tiny", embed_dim=32, num_heads=2, interaction_indexes=[0, 1], depth=2)
    path = tmp_path / "vitt.pt"
    torch.save(source.dinov3._model.state_dict(), path)  # the official ViT-Tiny checkpoint has no `_model.` prefix
    loaded = DINOv3STAs(name="vit_tiny", embed_dim=32, num_heads=2, interaction_indexes=[0, 1], depth=2,
                        weights_path=str(path))
    assert torch.equal(loaded.dinov3._model.blocks[1].mlp.fc2.weight, source.dinov3._model.blocks[1].mlp.fc2.weight)
    with pytest.raises(CheckpointError):
        DINOv3STAs(name="vit_tiny", embed_dim=32, num_heads=2, depth=2, weights_path=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("name", ["vit_tiny", "dinov3_vits16plus"])
def test_vit_backbone_flops_equal_calflops(name):
    """RoPE, scaled_dot_product_attention, layer scale and the masked key bias are counted as calflops counts them."""
    from metrics.flops import count_flops
    from tests.test_info import calflops_count
    torch.manual_seed(0)
    kwargs = {"embed_dim": 32, "num_heads": 2} if name == "vit_tiny" else {}
    backbone = DINOv3STAs(name=name, interaction_indexes=[0, 1], depth=2, conv_inplane=4, hidden_dim=16,
                          **kwargs).eval()
    assert count_flops(backbone, torch.zeros(1, 3, 64, 64)).flops == calflops_count(backbone, (1, 3, 64, 64))
