import copy
import math

import pytest
import torch

from blocks.decoder.dfine_decoder import DFINEDecoder
from models import build_model
from core.box_ops import box_cxcywh_to_xyxy
from blocks.decoder._denoising import contrastive_denoising_group

SMALL = dict(num_classes=3, hidden_dim=32, num_queries=10, feat_strides=[8, 16, 32], num_points=[2, 2, 2], nhead=4,
             num_layers=3, dim_feedforward=64, num_denoising=6, reg_max=8)
CHANNELS = [16, 32, 32]


def small_decoder(seed=0, **overrides):
    torch.manual_seed(seed)
    return DFINEDecoder(CHANNELS, **{**SMALL, **overrides})


def features(image_size: int, batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, image_size // s, image_size // s, generator=generator)
            for c, s in zip(CHANNELS, (8, 16, 32))]


def two_images_targets():
    return [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]])},
            {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.4, 0.5, 0.6]])}]


def perturb(module, scale=0.05, seed=2):
    """Move every trainable weight off its (partly zero) initial value, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=generator))
    return module


def test_matches_numbers_recorded_from_the_official_decoder():
    # Produced by the official D-FINE DFINETransformer (Peterande/D-FINE @ 4a1f73a, src/zoo/dfine) run outside
    # this repo: feat_channels=[16, 32, 32] and SMALL's arguments, torch.manual_seed(0) before construction (its
    # initialisation draws random numbers in the same order as ours), then perturb(), then features(128) in eval;
    # training: torch.manual_seed(3) before the forward with two_images_targets() (same denoising noise).
    model = perturb(small_decoder()).eval()
    with torch.no_grad():
        out = model(features(128))
    expected_logits = torch.tensor([[-3.922537, -4.697105, -4.553067], [-3.426554, -4.616404, -4.969321]])
    expected_boxes = torch.tensor([[0.466523, 0.576174, 0.089018, 0.102275], [0.679681, 0.103700, 0.048038, 0.045937]])
    torch.testing.assert_close(out["pred_logits"][0, :2], expected_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_boxes"][0, :2], expected_boxes, atol=1e-5, rtol=0)
    assert out["pred_logits"].abs().sum().item() == pytest.approx(272.44168, rel=1e-5)
    assert out["pred_boxes"].abs().sum().item() == pytest.approx(20.746964, rel=1e-5)

    model.train()
    torch.manual_seed(3)
    out = model(features(128), two_images_targets())
    sums = [out["pred_logits"].abs().sum(), out["pred_boxes"].abs().sum(),
            out["dn_outputs"][-1]["pred_boxes"].abs().sum(), out["dn_pre_outputs"]["pred_logits"].abs().sum(),
            out["aux_outputs"][0]["pred_corners"].abs().sum(), out["enc_aux_outputs"][0]["pred_boxes"].abs().sum()]
    official = [271.09402, 21.859257, 31.656092, 348.84399, 53.357559, 21.499487]
    assert [s.item() for s in sums] == pytest.approx(official, rel=1e-5)


@pytest.mark.parametrize("image_size", [128, 192])
def test_eval_and_train_outputs_have_the_official_keys_and_shapes(image_size):
    model = perturb(small_decoder())
    model.eval()
    with torch.no_grad():
        out = model(features(image_size))
    assert set(out) == {"pred_logits", "pred_boxes"}
    assert out["pred_logits"].shape == (2, 10, 3) and out["pred_boxes"].shape == (2, 10, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()

    model.train()
    out = model(features(image_size), two_images_targets())
    assert set(out) == {"pred_logits", "pred_boxes", "pred_corners", "ref_points", "up", "reg_scale", "aux_outputs",
                        "enc_aux_outputs", "pre_outputs", "enc_meta", "dn_outputs", "dn_pre_outputs", "dn_meta"}
    assert out["pred_corners"].shape == (2, 10, 4 * (8 + 1)) and out["ref_points"].shape == (2, 10, 4)
    assert len(out["aux_outputs"]) == 2 and len(out["enc_aux_outputs"]) == 1 and len(out["dn_outputs"]) == 3
    aux = out["aux_outputs"][0]
    assert set(aux) == {"pred_logits", "pred_boxes", "pred_corners", "ref_points", "teacher_corners", "teacher_logits"}
    # GO-LSD: every layer is taught by the last one
    assert torch.equal(aux["teacher_corners"], out["pred_corners"])
    assert torch.equal(aux["teacher_logits"], out["pred_logits"])
    assert not torch.equal(aux["pred_corners"], out["pred_corners"])
    assert out["enc_meta"] == {"class_agnostic": False}
    # at most 2 boxes per image, 6 denoising queries -> 3 groups of (2 positive + 2 negative)
    meta = out["dn_meta"]
    assert meta["dn_num_group"] == 3 and meta["dn_num_split"] == [12, 10]
    assert out["dn_outputs"][-1]["pred_boxes"].shape == (2, 12, 4)
    assert out["dn_pre_outputs"]["pred_logits"].shape == (2, 12, 3)
    assert out["pre_outputs"]["pred_boxes"].shape == (2, 10, 4)


def test_anchors_are_cached_for_eval_size_and_made_for_any_other_size():
    model = perturb(small_decoder(eval_spatial_size=[128, 128])).eval()
    assert model.anchors.shape == (1, 16 * 16 + 8 * 8 + 4 * 4, 4)
    # first cell of the finest level: centre (0.5/16, 0.5/16), size 0.05, stored as logits
    first = torch.tensor([0.5 / 16, 0.5 / 16, 0.05, 0.05])
    torch.testing.assert_close(model.anchors[0, 0], torch.log(first / (1 - first)))
    # last cell of the coarsest level: centre (3.5/4), size 0.05 * 2**2
    last = torch.tensor([3.5 / 4, 3.5 / 4, 0.2, 0.2])
    torch.testing.assert_close(model.anchors[0, -1], torch.log(last / (1 - last)))

    uncached = copy.deepcopy(model)
    uncached.eval_spatial_size = None
    for size in (128, 160, 96):  # 160 and 96 are not the cached size
        with torch.no_grad():
            a, b = model(features(size)), uncached(features(size))
        torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"])
        torch.testing.assert_close(a["pred_logits"], b["pred_logits"])


def test_anchors_outside_the_border_margin_are_masked():
    from blocks.decoder._deformable_attention import generate_anchors

    # a 1 x 64 map: x centres 0.5/64 = 0.0078 and 63.5/64 = 0.992 lie within eps=0.01 of the border
    anchors, valid = generate_anchors([[1, 64]], eps=small_decoder().eps)
    assert valid.shape == (1, 64, 1)
    assert not valid[0, 0, 0] and not valid[0, -1, 0] and valid[0, 1:-1, 0].all()
    assert torch.isinf(anchors[0, 0]).all() and torch.isfinite(anchors[0, 1:-1]).all()


def test_backward_reaches_features_and_all_trainable_heads():
    model = perturb(small_decoder()).train()
    feats = [f.requires_grad_(True) for f in features(128)]
    out = model(feats, two_images_targets())
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum() + out["dn_outputs"][0]["pred_logits"].sum()
    loss = loss + sum(a["pred_logits"].sum() for a in out["aux_outputs"] + out["enc_aux_outputs"])
    loss = loss + out["pre_outputs"]["pred_boxes"].sum()
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    for name in ("enc_score_head.weight", "dec_score_head.2.weight", "query_pos_head.layers.0.weight",
                 "decoder.layers.1.cross_attn.attention_weights.bias",
                 "denoising_class_embed.weight", "input_proj.0.conv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert not model.up.requires_grad and not model.reg_scale.requires_grad


def test_fuse_keeps_eval_outputs_and_drops_what_the_official_deploy_drops():
    model = perturb(small_decoder(eval_idx=-2)).eval()  # layer 2 is a training-only layer
    x = features(128)
    with torch.no_grad():
        expected = model(x)
    params = sum(p.numel() for p in model.parameters())
    dropped = [model.decoder.layers[2], model.dec_bbox_head[2], model.dec_score_head[0], model.dec_score_head[2],
               model.decoder.lqe_layers[0], model.decoder.lqe_layers[2]]
    dropped_params = sum(p.numel() for m in dropped for p in m.parameters())
    fused = copy.deepcopy(model)
    fused.decoder.fuse()
    fused.fuse()
    assert len(fused.decoder.layers) == 2
    assert sum(p.numel() for p in fused.parameters()) == params - dropped_params
    with torch.no_grad():
        actual = fused(x)
    torch.testing.assert_close(actual["pred_logits"], expected["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual["pred_boxes"], expected["pred_boxes"], atol=1e-5, rtol=1e-5)


def test_dfine_n_decoder_has_the_official_parameter_counts():
    # official D-FINE-N DFINETransformer (dfine_hgnetv2_n_coco.yml): 1,228,473 parameters, 1,205,015 after deploy
    model = DFINEDecoder([128, 128], hidden_dim=128, feat_strides=[16, 32], num_levels=2, num_points=[6, 6],
                         num_layers=3, dim_feedforward=512, eval_spatial_size=[640, 640])
    assert sum(p.numel() for p in model.parameters()) == 1_228_473
    model.eval()
    model.decoder.fuse()
    model.fuse()
    assert sum(p.numel() for p in model.parameters()) == 1_205_015


def test_denoising_groups_follow_the_contrastive_layout():
    embed = torch.nn.Embedding(4, 8, padding_idx=3)
    targets = [{"labels": torch.tensor([0, 1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3)},
               {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.3, 0.3, 0.1, 0.4]])}]
    torch.manual_seed(0)
    content, boxes_unact, mask, meta = contrastive_denoising_group(targets, 3, 5, embed, num_denoising=13,
                                                                   label_noise_ratio=0.0)
    groups = 13 // 3  # 4 groups of 3 positives + 3 negatives (padded to the largest image)
    assert meta["dn_num_group"] == groups and meta["dn_num_split"] == [24, 5]
    assert content.shape == (2, 24, 8) and boxes_unact.shape == (2, 24, 4) and mask.shape == (29, 29)
    assert meta["dn_positive_idx"][0].tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14, 18, 19, 20]
    assert meta["dn_positive_idx"][1].tolist() == [0, 6, 12, 18]
    # padded slots get the padding embedding (zeros); with no label noise the rest keep their class
    assert (content[1, 1:3] == 0).all() and torch.equal(content[1, 0], embed.weight[2])
    # matching queries never see denoising queries; groups never see each other; queries see their own group
    assert mask[24:, :24].all() and not mask[24:, 24:].any() and not mask[:24, 24:].any()
    assert not mask[:6, :6].any() and mask[:6, 6:24].all() and mask[6:12, :6].all() and not mask[6:12, 6:12].any()
    # positive copies move each corner by less than half the box size (0.1 here)
    corners = box_cxcywh_to_xyxy(torch.sigmoid(boxes_unact[0, :3]))
    assert ((corners - torch.tensor([0.4, 0.4, 0.6, 0.6])).abs() < 0.1 + 1e-4).all()

    assert contrastive_denoising_group(targets, 3, 5, embed, num_denoising=0) == (None, None, None, None)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    assert contrastive_denoising_group(empty, 3, 5, embed)[3] == {"dn_positive_idx": None, "dn_num_group": 0,
                                                                    "dn_num_split": [0, 5]}


@pytest.mark.parametrize("counts", [(0, 0), (0, 2)])
def test_training_with_images_without_boxes_is_finite(counts):
    model = small_decoder().train()
    targets = [{"labels": torch.zeros(n, dtype=torch.long), "boxes": torch.full((n, 4), 0.4)} for n in counts]
    out = model(features(128), targets)
    assert out["dn_meta"]["dn_num_group"] == (0 if max(counts) == 0 else 3)
    values = [out["pred_logits"], out["pred_boxes"], out["dn_outputs"][-1]["pred_boxes"]]
    assert all(torch.isfinite(v).all() for v in values)
    (out["pred_logits"].sum() + out["pred_boxes"].sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_small_inputs_give_one_query_per_token():
    model = small_decoder(num_queries=300).eval()
    with torch.no_grad():
        out = model(features(64))  # 8*8 + 4*4 + 2*2 = 84 tokens
    assert out["pred_logits"].shape == (2, 84, 3)


def test_decoder_row_in_a_graph_gets_targets_classes_and_eval_size():
    graph = {"nc": 5, "imgsz": [96, 96],
             "backbone": [[-1, 1, "Conv", [16, 3, 8]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
             "decoder": [[[0, 1, 2], 1, "DFINEDecoder", {k: v for k, v in SMALL.items() if k != "num_classes"}]]}
    model = build_model(graph)
    decoder = model.layers[3]
    assert decoder.num_classes == 5 and decoder.eval_spatial_size == [96, 96]
    model.train()
    out = model(torch.randn(2, 3, 96, 96), two_images_targets())
    assert out["pred_logits"].shape == (2, 10, 5) and "dn_meta" in out
    model.deploy()
    assert len(decoder.decoder.layers) == 3 and math.isfinite(model(torch.randn(1, 3, 128, 128))["pred_boxes"].sum())
