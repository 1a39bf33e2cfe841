"""Deformable DETR graph: HF transformers' parameter count and state-dict layout, converted HF weights
give HF's outputs (numbers recorded from transformers 5.23 outside the repo on tests/official_weights.py's
fill and image; and, where transformers is installed, compared live with box refinement and two-stage),
on a padded batch of two image sizes with HF's pixel_mask too (recorded from transformers 5.24), a
training step, and the post-processing hardening (boxes clipped to the image)."""
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

# HF DeformableDetrForObjectDetection(pixel_values, pixel_mask) on padded_batch(), transformers 5.24 (the tiny
# config below; same fill): logits[:, :3, :4] and pred_boxes[:, :3] per variant, image 1 being the padded one
HF_PADDED = {
    "plain": {"logits": [[[7.466828, -11.604713, -6.506535, 4.403578], [8.036354, 0.546322, -8.78583, 2.7291],
                          [-3.408908, -5.121361, 10.03508, -3.048681]],
                         [[7.467684, -11.635121, -6.594116, 4.387358], [8.091814, 0.500681, -8.942365, 2.739837],
                          [-3.35867, -5.216503, 9.904778, -2.998348]]],
              "boxes": [[[0.532418, 0.511632, 0.51705, 0.496583], [0.516474, 0.509001, 0.5111, 0.498303],
                         [0.519728, 0.50592, 0.511285, 0.495915]],
                        [[0.532613, 0.511738, 0.517097, 0.496545], [0.51652, 0.509078, 0.510939, 0.498358],
                         [0.519718, 0.505903, 0.511449, 0.496048]]]},
    "refine": {"logits": [[[7.428596, -11.547413, -6.472258, 4.44692], [7.953724, 0.575128, -8.750954, 2.654455],
                           [-3.383754, -5.151639, 10.192975, -3.148965]],
                          [[7.42774, -11.554188, -6.636568, 4.46401], [7.973117, 0.577778, -8.955185, 2.703586],
                           [-3.357755, -5.211242, 9.999173, -3.087716]]],
               "boxes": [[[0.530875, 0.505421, 0.500754, 0.506278], [0.517117, 0.497245, 0.493979, 0.513359],
                          [0.52847, 0.50008, 0.4845, 0.510227]],
                         [[0.53093, 0.505592, 0.500833, 0.506346], [0.517179, 0.497264, 0.493788, 0.513516],
                          [0.528342, 0.499953, 0.484607, 0.510516]]]},
    "two_stage": {"logits": [[[-11.08729, 8.446679, -7.131442, 5.456942], [-12.19392, 8.826061, -8.275024, 6.308331],
                              [-15.405048, 3.070297, -10.258754, 6.241202]],
                             [[-10.115974, 9.140473, -5.587768, 4.347915], [-12.082891, 7.820776, -7.37629, 6.658503],
                              [-14.01609, 2.449191, -10.399988, 5.764019]]],
                  "boxes": [[[0.059689, 0.307641, 0.112182, 0.101363], [0.059487, 0.18348, 0.111528, 0.100138],
                             [0.552878, 0.183734, 0.112191, 0.101435]],
                            [[0.068187, 0.40897, 0.112238, 0.102094], [0.208635, 0.241403, 0.113563, 0.10242],
                             [0.633926, 0.244419, 0.11252, 0.101481]]]},
}
VARIANTS = {"plain": {}, "refine": {"with_box_refine": True}, "two_stage": {"with_box_refine": True, "two_stage": True}}


def padded_batch():
    """sample_images() with the second image cut to 96x112 (h, w) and zero-padded back to 128x128, as a
    collate pads differently sized images, and the mask of real pixels."""
    mask = torch.ones(2, 128, 128, dtype=torch.bool)
    mask[1, 96:], mask[1, :, 112:] = False, False
    return sample_images() * mask[:, None], mask


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


def hf_filled(**options):
    """Our tiny graph with the deterministic fill, loaded through the HF layout as in the HF runs."""
    model = build_model(spec(**options), check=False).eval()
    hf = {k: v for k, v in deterministic_fill(to_official_layout(model)).items() if not k.endswith(NOT_IN_HF)}
    converted, _ = convert_official(hf, model, strict=True)
    model.load_state_dict(converted)
    return model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padded_batch_with_pixel_mask_gives_hf_outputs(variant):
    model = hf_filled(**VARIANTS[variant])
    images, mask = padded_batch()
    with torch.no_grad():
        out, unmasked = model(images, pixel_mask=mask), model(images)
    expected = HF_PADDED[variant]
    torch.testing.assert_close(out["pred_logits"][:, :3, :4], torch.tensor(expected["logits"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_boxes"][:, :3], torch.tensor(expected["boxes"]), atol=1e-5, rtol=0)
    # the mask matters only where there is padding: the full image is unchanged, the padded one is not
    torch.testing.assert_close(unmasked["pred_logits"][0], out["pred_logits"][0], atol=1e-5, rtol=0)
    assert (unmasked["pred_logits"][1] - out["pred_logits"][1]).abs().max() > 0.1


def test_collate_batches_two_sizes_with_the_mask_hf_takes():
    from data.collate import BatchImageCollateFunction, padding_mask

    images, mask = padded_batch()
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    items = [(images[0], {"boxes": boxes, "labels": torch.tensor([1]), "size": torch.tensor([128, 128])}),
             (images[1, :, :96, :112], {"boxes": boxes, "labels": torch.tensor([2]), "size": torch.tensor([112, 96])})]
    batch, targets = BatchImageCollateFunction(padding_mask=True)(items)
    assert torch.equal(batch, images) and torch.equal(padding_mask(batch, targets), mask)
    assert all(torch.equal(t["boxes"], boxes) for t in targets)        # each image's own coordinates
    with torch.no_grad():
        out = hf_filled()(batch, pixel_mask=padding_mask(batch, targets))
    torch.testing.assert_close(out["pred_boxes"][:, :3], torch.tensor(HF_PADDED["plain"]["boxes"]), atol=1e-5, rtol=0)
    # without padding_mask the collate keeps its old rule: boxes and size follow the padded canvas
    _, canvas = BatchImageCollateFunction()(items)
    assert torch.allclose(canvas[1]["boxes"], boxes * torch.tensor([112 / 128, 96 / 128] * 2))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padded_batch_equal_to_live_hf_model(variant):
    transformers = pytest.importorskip("transformers")
    config = transformers.DeformableDetrConfig(
        use_pretrained_backbone=False, num_labels=5, d_model=64, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_attention_heads=4, decoder_attention_heads=4,
        num_queries=20, two_stage_num_proposals=20, **VARIANTS[variant])
    hf = transformers.DeformableDetrForObjectDetection(config).eval()
    hf.load_state_dict(deterministic_fill(hf.state_dict()))
    model = build_model(spec(**VARIANTS[variant]), check=False).eval()
    model.load_state_dict(convert_official(hf.state_dict(), model, strict=True)[0])
    images, mask = padded_batch()
    with torch.no_grad():
        expected, out = hf(pixel_values=images, pixel_mask=mask.long()), model(images, pixel_mask=mask)
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


def test_padded_batches_need_a_graph_that_reads_the_mask(tmp_path):
    # boxes normalised to each image rather than to the padded canvas would be wrong targets for a
    # model that sees the whole canvas: the run stops before training on them
    from core.errors import ConfigError
    from engine.config import load_config
    from engine.solver import Solver
    from tests.engine_helpers import make_data, tiny_config, write_config

    cfg = tiny_config(make_data(tmp_path / "data", train=4, val=2), epochs=1)
    cfg["train_dataloader"]["collate_fn"]["padding_mask"] = True
    with pytest.raises(ConfigError, match="no row of this graph does") as err:
        Solver(load_config(write_config(cfg, tmp_path / "run.yml")), device="cpu", output_dir=str(tmp_path / "run"))
    assert "train_dataloader.collate_fn.padding_mask" in str(err.value)


def test_solver_trains_on_differently_sized_images_with_their_padding_mask(tmp_path, monkeypatch):
    # IoU crops give every training image its own size; with collate_fn.padding_mask the batch is
    # padded, each image keeps its own normalised boxes, and the decoder sees the mask of its pixels
    from engine.config import load_config
    from engine.solver import Solver
    from models.detector import Detector
    from tests.engine_helpers import REPO, make_data, write_config

    data = make_data(tmp_path / "data", train=4, val=2)
    graph = spec()
    graph["nc"], graph["imgsz"] = 3, [96, 96]
    graph["decoder"][0][3].update(num_queries=10)

    def split(name, ops):
        return {"dataset": {"type": "coco", "img_folder": str(data / name), "transforms": {"ops": ops},
                            "ann_file": str(data / name / "_annotations.coco.json")},
                "total_batch_size": 2, "num_workers": 0, "collate_fn": {"padding_mask": True}}

    tensor = [{"type": "ConvertPILImage", "dtype": "float32", "scale": True}]
    cfg = {"__include__": [str(REPO / "configs/deformable-detr/deformable-detr-r50-coco.yml")], "graph": graph,
           "imgsz": [96, 96], "epochs": 1, "print_freq": 100, "plot_train_batch_freq": 0, "progress_bar": False,
           "output_dir": str(tmp_path / "run"), "postprocessor": {"num_top_queries": 10},
           "train_dataloader": split("train", [{"type": "RandomIoUCrop", "p": 1.0},
                                               {"type": "SanitizeBoundingBoxes", "min_size": 1}, *tensor,
                                               {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}]),
           "val_dataloader": split("val", tensor)}
    masks = []
    forward = Detector.forward

    def recording(self, images, targets=None, pixel_mask=None):
        if self.training:
            masks.append((images.shape[-2:], pixel_mask, [t["size"].tolist() for t in targets]))
        return forward(self, images, targets, pixel_mask=pixel_mask)

    monkeypatch.setattr(Detector, "forward", recording)
    torch.manual_seed(0)
    Solver(load_config(write_config(cfg, tmp_path / "run.yml")), device="cpu", seed=0).fit()
    assert len(masks) == 2
    for (height, width), mask, sizes in masks:
        assert mask is not None and mask.shape[-2:] == (height, width)
        for image_mask, (w, h) in zip(mask, sizes):   # True exactly on each image's own w x h, from the top left
            assert image_mask.sum() == w * h and image_mask[:h, :w].all()
    assert any(mask is not None and not mask.all() for _, mask, _ in masks)   # a batch really was padded
