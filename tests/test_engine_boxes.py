"""Evaluation maps predicted boxes back to the original image exactly, for stretch and letterbox."""
import types

import pytest
import torch
from torchvision import tv_tensors

from data.transforms import Resize
from engine.solver import Solver
from models.postprocess import PostProcessor


@pytest.mark.parametrize("letterbox", [False, True])
def test_predicted_box_returns_to_original_pixels(letterbox):
    from PIL import Image

    original = torch.tensor([[20.0, 10.0, 120.0, 60.0]])           # xyxy in a 200 x 100 image
    target = {"boxes": tv_tensors.BoundingBoxes(original.clone(), format="XYXY", canvas_size=(100, 200)),
              "labels": torch.tensor([1]), "orig_size": torch.tensor([200, 100])}
    image, target = Resize([64, 64], letterbox=letterbox)(Image.new("RGB", (200, 100)), target)
    target["size"] = torch.tensor([64, 64])
    # by hand: stretch scales x by 0.32 and y by 0.64; letterbox scales both by 0.32 and pads 16 px on top
    expected_input = [6.4, 6.4, 38.4, 38.4] if not letterbox else [6.4, 19.2, 38.4, 35.2]
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor)[0], torch.tensor(expected_input))
    x0, y0, x1, y1 = (v / 64 for v in expected_input)
    outputs = {"pred_logits": torch.tensor([[[-9.0, 9.0], [-9.0, -9.0]]]),
               "pred_boxes": torch.tensor([[[(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], [0.5, 0.5, 0.1, 0.1]]])}
    results = Solver.to_original_boxes(types.SimpleNamespace(device="cpu"), PostProcessor(num_classes=2, num_top_queries=1),
                                       outputs, [target])
    assert results[0]["labels"].tolist() == [1]
    torch.testing.assert_close(results[0]["boxes"], original, rtol=0, atol=1e-4)
