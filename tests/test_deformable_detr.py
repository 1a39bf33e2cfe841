"""Deformable DETR graph: HF transformers' parameter count and state-dict layout, converted HF weights
give HF's outputs (numbers recorded from transformers 5.23 outside the repo on tests/official_weights.py's
fill and image; and, where transformers is installed, compared live with box refinement and two-stage),
a training step, and the post-processing hardening (boxes clipped to the image)."""
import json
import re
from pathlib import Path

import pytest
import torch

from metrics.flops import count_params
from models import build_model
from models.convert import convert_official, is_hf_layout
from models.criterion import build_criterion
from models.postprocess import PostProcessor
from tests.official_weights import deterministic_fill, layout_hash, sample_images, to_official_layout

GRAPH = Path(__file__).resolve().parents[1] / "graphs/deformable-detr/deformable-detr-r50.yaml"
REFERENCE = Path(__file__).resolve().parent / "data/official_models.json"  # the official zoos' figures
HF_FULL_LAYOUT = (585, "0dc8319ac8aaefbb")     # DeformableDetrForObjectDetection(num_labels=91), transformers 5.23
HF_TINY_LAYOUT = (369, "14f0ebe4c824dd43")
NOT_IN_HF = ("num_points_scale",)  # our deformable attention's constant buffer; the converter fills it
HF_TINY_LOGITS = [[[7.466830, -11.604713, -6.506536, 4.403579], [8.036356, 0.546322, -8.785832, 2.729098],
                   [-3.408907, -5.121363, 10.035079, -3.048679]],
                  [[7.540906, -11.563931, -6.551887, 4.442360], [8.081265, 0.615857, -8.828207, 2.850965],
                   [-3.388982, -5.096939, 10.016109, -2.952448]]]
HF_TINY_BOXES = [[[0.532418, 0.511632, 0.517050, 0.496583], [0.516474, 0.509001, 0.511100, 0.498303],
                  [0.519728, 0.505920, 0.511285, 0.495915]],
                 [[0.532364, 0.511547, 0.517138, 0.496683], [0.516450, 0.508957, 0.511090, 0.498423],
                  [0.519537, 0.505823, 0.511330, 0.496075]]]


def spec(**decoder) -> dict:
    """The graph with a narrower transformer (64 wide, 1 encoder / 2 decoder layers, 20 queries, 5 classes),
    as the recorded HF run: DeformableDetrConfig(d_model=64, encoder_layers=1, decoder_layers=2,
    encoder_ffn_dim=128, decoder_ffn_dim=128, attention heads 4, num_queries=20, num_labels=5)."""
    graph = json.loads(json.dumps(build_model(GRAPH, check=False).graph_spec))
    graph["nc"], graph["imgsz"] = 5, [128, 128]
    graph["encoder"][0][3].update(hidden_dim=64, num_layers=1, dim_feedforward=128, nhead=4)
    graph["decoder"][0][3].update(hidden_dim=64, num_layers=2, dim_feedforward=128, nhead=4, num_queries=20, **decoder)
    return graph


def test_params_equal_hf_count():
    expected = json.loads(REFERENCE.read_text())["models"]["deformable-detr-r50"]["params"]
    model = build_model(GRAPH, check=False)
    assert count_params(model) == expected
    # frozen as the reference: BN statistics are buffers; the stem and layer1 do not train
    body = model.layers[0].body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert not any(p.requires_grad for p in body.layer1.parameters()) and getattr(body.layer2, "0").conv1.weight.requires_grad


def test_state_dict_layout_is_hf_layout():
    assert layout_hash(to_official_layout(build_model(GRAPH, check=False)), skip=NOT_IN_HF) == HF_FULL_LAYOUT


def test_converted_hf_weights_give_hf_outputs():
    model = build_model(spec(), check=False).eval()
    hf = {k: v for k, v in deterministic_fill(to_official_layout(model)).items() if not k.endswith(NOT_IN_HF)}
    assert is_hf_layout(hf) and layout_hash(hf) == HF_TINY_LAYOUT
    converted, report = convert_official(hf, model, strict=True)
    assert report.mapped == len(model.state_dict()) and not report.dropped
    model.load_state_dict(converted)
    with torch.no_grad():
        out = model(sample_images())
    torch.testing.assert_close(out["pred_logits"][:, :3, :4], torch.tensor(HF_TINY_LOGITS), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_boxes"][:, :3], torch.tensor(HF_TINY_BOXES), atol=1e-5, rtol=0)


def test_checkpoints_of_older_transformers_convert_too():
    model = build_model(spec(), check=False)
    current = to_official_layout(model)
    # transformers 4.x: the backbone under conv_encoder, FFN linears directly on the layer, out_proj
    legacy = {re.sub(r"\.mlp\.fc", ".fc", k.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
                     .replace("self_attn.o_proj", "self_attn.out_proj")): v for k, v in current.items()}
    assert legacy.keys() != current.keys()
    converted, report = convert_official(legacy, model, strict=True)
    assert report.mapped == len(model.state_dict())


def test_tied_heads_saved_once_still_convert():
    # HF's save_pretrained keeps one name per tied tensor: class_embed.0 / bbox_embed.0 only
    model = build_model(spec(), check=False)
    saved = {k: v for k, v in deterministic_fill(to_official_layout(model)).items()
             if not re.match(r"(class|bbox)_embed\.[1-9]", k)}
    converted, report = convert_official(saved, model, strict=True)
    model.load_state_dict(converted)
    heads = model.layers[2].class_embed
    assert heads[1] is heads[0] and torch.equal(heads[0].weight, saved["class_embed.0.weight"])


@pytest.mark.parametrize("options", [{"with_box_refine": True}, {"with_box_refine": True, "two_stage": True}])
def test_equal_to_live_hf_model(options):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.DeformableDetrConfig(
        use_pretrained_backbone=False, num_labels=5, d_model=64, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_attention_heads=4, decoder_attention_heads=4,
        num_queries=20, two_stage_num_proposals=20, **options)
    hf = transformers.DeformableDetrForObjectDetection(config).eval()
    hf.load_state_dict(deterministic_fill(hf.state_dict()))
    model = build_model(spec(**options), check=False).eval()
    converted, report = convert_official(hf.state_dict(), model, strict=True)
    model.load_state_dict(converted)
    images = sample_images()
    with torch.no_grad():
        expected, out = hf(pixel_values=images), model(images)
    torch.testing.assert_close(out["pred_logits"], expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], expected.pred_boxes, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [{}, {"with_box_refine": True, "two_stage": True}])
def test_training_step_at_128(options):
    torch.manual_seed(0)
    model = build_model(spec(**options), check=False).train()
    targets = [{"labels": torch.tensor([1, 4]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1]])},
               {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.4, 0.3, 0.2]])}]
    out = model(torch.rand(2, 3, 128, 128), targets)
    assert out["pred_logits"].shape == (2, 20, 5) and len(out["aux_outputs"]) == 1
    assert ("enc_aux_outputs" in out) == bool(options.get("two_stage"))
    criterion = build_criterion({
        "type": "RTDETRv2Criterion", "num_classes": 5, "weight_dict": {"loss_focal": 2, "loss_bbox": 5, "loss_giou": 2},
        "losses": ["focal", "boxes"], "alpha": 0.25, "gamma": 2.0,
        "matcher": {"type": "HungarianMatcher", "weight_dict": {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2},
                    "alpha": 0.25, "gamma": 2.0}})
    sum(criterion(out, targets).values()).backward()
    backbone, encoder, decoder = model.layers
    assert getattr(backbone.body.layer2, "0").conv1.weight.grad.abs().sum() > 0 and backbone.body.conv1.weight.grad is None
    # (level_embed only steers sampling offsets and weights, which start at zero: no gradient at init)
    assert encoder.layers[0].self_attn.value_proj.weight.grad.abs().sum() > 0 and encoder.level_embed.grad is not None
    assert all(p.grad is not None for p in decoder.parameters())


def test_postprocess_clips_boxes_to_the_image():
    # a box centred at the right edge, half outside: x 90..110 of a 100-wide image -> 90..100
    outputs = {"pred_logits": torch.tensor([[[3.0]]]), "pred_boxes": torch.tensor([[[1.0, 0.5, 0.2, 0.4]]])}
    result, = PostProcessor(num_classes=1)(outputs, torch.tensor([[100, 50]]))
    assert torch.allclose(result["boxes"], torch.tensor([[90.0, 15.0, 100.0, 35.0]]))
    raw, = PostProcessor(num_classes=1, clamp_boxes=False)(outputs, torch.tensor([[100, 50]]))
    assert torch.allclose(raw["boxes"], torch.tensor([[90.0, 15.0, 110.0, 35.0]]))


def test_flop_count_equals_calflops():
    from metrics.flops import count_flops, deployed_copy
    from tests.test_info import calflops_count

    model = deployed_copy(build_model(spec(two_stage=True, with_box_refine=True), check=False))
    assert count_flops(model, torch.zeros(1, 3, 128, 128)).flops == calflops_count(model, (1, 3, 128, 128))
