"""deploy() keeps a detector's outputs: conv+BN folded, RepVGG branches merged, decoder layers past
eval_idx and training-only heads dropped.

Compared as sets of (logits, box) rows: query selection is a top-k over encoder scores, and with random
weights many scores are near-tied, so float noise of ~1e-7 from folding reorders queries (the official
models reorder against their own deploy() the same way). At 96 px these graphs have fewer encoder
tokens than queries (at most 12x12 + 6x6 + 3x3 = 189 against 300), so every token is selected and
only the order can change."""
import copy
import sys
from pathlib import Path

import pytest
import torch

from models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from export_check import nudge_weights  # noqa: E402  (the export tests' nudge)

GRAPHS = ["graphs/dfine/dfine-n.yaml", "graphs/deim/deim-n.yaml", "graphs/rtdetrv2/rtdetrv2-r18.yaml",
          "graphs/deimv2/deimv2-atto.yaml"]


def nudged(model: torch.nn.Module) -> torch.nn.Module:
    """Weights and BN statistics moved off their initialisation, so folding has something to fold."""
    nudge_weights(model)
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model.eval()


@pytest.mark.parametrize("graph", GRAPHS)
def test_deploy_gives_the_eval_outputs(graph):
    torch.manual_seed(0)
    model = nudged(build_model(graph, imgsz=96, check=False))
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
        deployed = copy.deepcopy(model).deploy()(images)
    rows = [torch.cat([out["pred_logits"], out["pred_boxes"]], -1) for out in (expected, deployed)]
    assert rows[0].shape == rows[1].shape
    for image in range(2):
        distance = torch.cdist(rows[0][image], rows[1][image], p=float("inf"))
        assert distance.min(1).values.max() < 1e-4  # every eval row is in the deployed output
        assert distance.min(0).values.max() < 1e-4  # and every deployed row in the eval output


@pytest.mark.parametrize("graph", GRAPHS)
def test_deploy_folds_every_batch_norm_the_official_deploy_keeps(graph):
    from blocks.common import is_batch_norm_2d
    from metrics.flops import count_params

    model = build_model(graph, imgsz=96, check=False)
    official = copy.deepcopy(model).deploy(official=True)
    kept = [m for m in official.modules() if is_batch_norm_2d(m)]
    assert kept  # the official deploy keeps HGNetv2's / ResNet's / the decoder projections' BNs
    ours = copy.deepcopy(model).deploy()
    assert not any(is_batch_norm_2d(m) for m in ours.modules())
    # each folded BN trades its weight and bias (2 per channel) for the conv's bias (1 per channel)
    assert count_params(official) - count_params(ours) == sum(m.num_features for m in kept)


def _layouts(model) -> set[bool]:
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return {w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
            for w in weights if w.shape[1] > 1 and w.shape[-2:] != (1, 1)}


def test_deploy_stores_conv_weights_channels_last_unless_asked_not_to():
    # (1x1 and depthwise kernels are both layouts at once, so only the others say which one was chosen)
    model = build_model("graphs/deim/deim-n.yaml", imgsz=96, check=False)
    assert _layouts(copy.deepcopy(model).deploy()) == {True}
    assert _layouts(copy.deepcopy(model).deploy(channels_last=False)) == {False}
    assert _layouts(copy.deepcopy(model).deploy(official=True)) == {False}  # the official form keeps NCHW


def test_deployed_activations_run_in_place_on_their_own_conv_outputs():
    from blocks.backbone._hgnetv2 import ConvBNAct

    model = build_model("graphs/dfine/dfine-n.yaml", imgsz=96, check=False)
    deployed = copy.deepcopy(model).deploy()
    units = [m for m in deployed.modules() if isinstance(m, ConvBNAct) and not isinstance(m.lab, torch.nn.Identity)]
    assert units and all(m.act.inplace and m.lab.inplace for m in units)
    unit = copy.deepcopy(units[0])  # the same unit run out of place: the same numbers
    unit.act.inplace = unit.lab.inplace = False
    x = torch.randn(1, unit.conv.in_channels, 16, 16)
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(units[0](x), unit(x))
    assert torch.equal(x, kept)  # the input itself is never overwritten


def test_gradients_through_the_deploy_form_equal_the_eval_form():
    # saliency through a deployed model: the in-place activations must not break or change backward.
    # The sum over all queries does not depend on their order (at 96 px every token is selected)
    torch.manual_seed(0)
    model = nudged(build_model("graphs/dfine/dfine-n.yaml", imgsz=96, check=False))
    grads = []
    for form in (model, copy.deepcopy(model).deploy()):
        images = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1)).requires_grad_()
        form(images)["pred_logits"].sigmoid().sum().backward()
        grads.append(images.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)
