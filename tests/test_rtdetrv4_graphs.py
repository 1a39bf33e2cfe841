"""RT-DETRv4 graphs: DEIM's network plus the training-only distillation projector of the encoder.

Official counts were recorded from RT-DETRs/RT-DETRv4 (random init); the deploy count is the
official one minus the projector, which the official deploy keeps although nothing reads it."""
import pytest
import torch

from models import build_model
from models.criterion.feature_distill import cosine_distillation_loss
from tests.test_deimv2_graphs import ROOT, TARGETS, _count

OFFICIAL = {"s": (10519253, 10237491), "m": (19787440, 19248189), "l": (31487224, 30769891),
            "x": (63011160, 61695555)}


@pytest.mark.parametrize("size", list(OFFICIAL))
def test_graph_matches_official_parameter_counts(size):
    torch.manual_seed(0)
    model = build_model(ROOT / f"graphs/rtdetrv4/rtdetrv4-{size}.yaml", check=False)
    encoder = model.layers[5]
    hidden = encoder.feature_projector[0].in_features
    assert encoder.feature_projector[0].out_features == 768
    assert _count(model) == OFFICIAL[size][0]
    projector = hidden * 768 + 768
    model.deploy(official=True)
    assert not hasattr(encoder, "feature_projector")
    assert _count(model) == OFFICIAL[size][1]
    # the projector is all that separates RT-DETRv4 from DEIM (the same graph without distill_teacher_dim)
    deim = build_model(ROOT / f"graphs/deim/deim-{size}.yaml", check=False)
    assert _count(deim) == OFFICIAL[size][0] - projector


def _tiny():
    return {"nc": 2, "imgsz": [64, 64], "backbone": [
        [-1, 1, "HGStem", [8, 8, True]],
        [-1, 1, "HGStage", [8, 16, 1, 2, False, False, 3, True]],
        [-1, 1, "HGStage", [8, 32, 1, 2, True, False, 3, True]],
        [-1, 1, "HGStage", [16, 48, 1, 2, True, True, 5, True]]],
        "encoder": [[[2, 3], 1, "HybridEncoder", {"feat_strides": [8, 16], "hidden_dim": 32, "use_encoder_idx": [1],
                                                  "nhead": 4, "dim_feedforward": 64, "expansion": 0.5,
                                                  "depth_mult": 0.34, "distill_teacher_dim": 24}]],
        "decoder": [[-1, 1, "DFINEDecoder", {"feat_strides": [8, 16], "hidden_dim": 32, "num_levels": 2,
                                             "num_layers": 2, "num_points": [2, 2], "nhead": 4, "dim_feedforward": 64,
                                             "num_queries": 10, "num_denoising": 4, "reg_max": 8}]]}


def test_projected_aifi_output_reaches_the_criterion_in_training_only():
    torch.manual_seed(0)
    model = build_model(_tiny(), check=False).train()
    images = torch.rand(2, 3, 64, 64)
    out, taps = model.run(images, TARGETS, taps=(3,))
    student = out["student_distill_output"]
    encoder = model.layers[4]
    # the projector reads the AIFI output (the stride-16 level after AIFI, before the FPN)
    aifi_out = encoder.encoder[0](encoder.input_proj[1](taps[3]))
    expected = encoder.feature_projector(aifi_out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert student.shape == (2, 24, 4, 4)
    torch.testing.assert_close(student, expected)
    loss = cosine_distillation_loss(student, torch.randn(2, 24, 8, 8))
    loss.backward()
    assert encoder.feature_projector[0].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        assert "student_distill_output" not in model(images)
