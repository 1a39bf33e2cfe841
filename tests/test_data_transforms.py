"""Every transform keeps boxes consistent with the image: property tests over random boxes."""
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from data.mosaic import Mosaic
from data.pipeline import Compose
from data.transforms import (ConvertBoxes, Resize, SanitizeBoundingBoxes, make_boxes, preprocess_image,
                             restore_boxes, TRANSFORMS)

FAST = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def boxed_images(draw, max_boxes=4):
    w, h = draw(st.integers(16, 80)), draw(st.integers(16, 80))
    boxes = []
    for _ in range(draw(st.integers(0, max_boxes))):
        x1, y1 = draw(st.integers(0, w - 4)), draw(st.integers(0, h - 4))
        boxes.append([x1, y1, draw(st.integers(x1 + 2, w)), draw(st.integers(y1 + 2, h))])
    return w, h, boxes


def sample(w, h, boxes, image=None):
    image = image or Image.new("RGB", (w, h), (0, 0, 0))
    n = len(boxes)
    return image, {"boxes": make_boxes(torch.tensor(boxes, dtype=torch.float32), (h, w)),
                   "labels": torch.arange(n), "area": torch.ones(n), "iscrowd": torch.zeros(n, dtype=torch.int64)}


def one_rect_image(w, h, box):
    """Black image with a white rectangle filling `box` exactly (xyxy, integer pixels)."""
    pixels = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = 255
    return Image.fromarray(pixels)


def white_bbox(image):
    mask = np.asarray(image.convert("L")) > 127
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def assert_consistent(image, target):
    w, h = image.size
    boxes = target["boxes"]
    assert boxes.canvas_size == (h, w)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert len(target["labels"]) == len(target["area"]) == len(target["iscrowd"]) == len(boxes)


@FAST
@given(boxed_images())
def test_horizontal_flip_mirrors_boxes_exactly(spec):
    w, h, boxes = spec
    image, target = TRANSFORMS["RandomHorizontalFlip"](p=1.0)(*sample(w, h, boxes))
    expected = torch.tensor([[w - b[2], b[1], w - b[0], b[3]] for b in boxes], dtype=torch.float32).reshape(-1, 4)
    assert torch.equal(target["boxes"].as_subclass(torch.Tensor), expected)
    assert_consistent(image, target)


@FAST
@given(boxed_images(), st.integers(8, 96), st.integers(8, 96), st.booleans())
def test_resize_scales_boxes_exactly_and_restore_inverts_it(spec, out_h, out_w, letterbox):
    w, h, boxes = spec
    image, target = Resize([out_h, out_w], letterbox=letterbox)(*sample(w, h, boxes))
    assert image.size == (out_w, out_h)
    sx, sy = target["scale"].tolist()
    left, top = target["pad"].tolist()
    if letterbox:  # fit inside with one ratio (content rounded to whole pixels), centred
        ratio = min(out_w / w, out_h / h)
        new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
        assert (sx * w, sy * h) == pytest.approx((new_w, new_h))
        assert (left, top) == ((out_w - new_w) // 2, (out_h - new_h) // 2) and (new_w == out_w or new_h == out_h)
    else:
        assert (sx, sy, left, top) == pytest.approx((out_w / w, out_h / h, 0, 0))
    original = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    expected = original * torch.tensor([sx, sy, sx, sy]) + torch.tensor([left, top, left, top])
    assert torch.allclose(target["boxes"].as_subclass(torch.Tensor), expected, atol=1e-4)
    assert torch.allclose(restore_boxes(target["boxes"].as_subclass(torch.Tensor), (sx, sy), (left, top), (w, h)),
                          original, atol=1e-3)
    assert (target["boxes"][:, 2] <= out_w + 1e-4).all() and (target["boxes"][:, 3] <= out_h + 1e-4).all()


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(24, 64), st.integers(24, 64), st.data(), st.sampled_from(["RandomZoomOut", "RandomIoUCrop", "flip"]))
def test_geometric_ops_keep_the_box_on_the_object(w, h, data, op_name):
    x1, y1 = data.draw(st.integers(0, w - 8)), data.draw(st.integers(0, h - 8))
    box = [x1, y1, data.draw(st.integers(x1 + 6, w)), data.draw(st.integers(y1 + 6, h))]
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    op = {"RandomZoomOut": TRANSFORMS["RandomZoomOut"](fill=0, p=1.0), "RandomIoUCrop": TRANSFORMS["RandomIoUCrop"](p=1.0),
          "flip": TRANSFORMS["RandomHorizontalFlip"](p=1.0)}[op_name]
    image, target = SanitizeBoundingBoxes(1)(*op(*sample(w, h, [box], one_rect_image(w, h, box))))
    assert_consistent(image, target)
    if len(target["boxes"]):
        # the white rectangle is exactly where the box says (crops cut both the same way)
        assert white_bbox(image) == pytest.approx(target["boxes"][0].tolist(), abs=1)


class RectDataset:
    """Stand-in for a dataset as Mosaic sees it: load_item(i) gives a one-rectangle image."""

    def __init__(self, n=6, size=48):
        rng = np.random.default_rng(1)
        self.items = []
        for _ in range(n):
            x1, y1 = rng.integers(0, size - 20, 2)
            box = [int(x1), int(y1), int(x1 + rng.integers(8, 20)), int(y1 + rng.integers(8, 20))]
            self.items.append(sample(size, size, [box], one_rect_image(size, size, box)))

    def __len__(self):
        return len(self.items)

    def load_item(self, i):
        return self.items[i]


@pytest.mark.parametrize("use_cache", [True, False])
def test_mosaic_boxes_cover_the_pasted_objects(use_cache):
    random.seed(0)
    torch.manual_seed(0)
    ds = RectDataset()
    mosaic = Mosaic(output_size=32, rotation_range=0, translation_range=(0.1, 0.1), scaling_range=(0.7, 1.3),
                    fill_value=0, use_cache=use_cache)
    for i in range(8):
        image, target = SanitizeBoundingBoxes(2)(*mosaic(*ds.load_item(i % len(ds)), ds))
        assert_consistent(image, target)
        mask = np.asarray(image.convert("L")) > 127
        inside = np.zeros_like(mask)
        for x1, y1, x2, y2 in target["boxes"].round().int().tolist():
            box_mask = mask[y1:y2, x1:x2]
            assert box_mask.mean() > 0.6  # the box sits on its rectangle
            inside[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True
        assert mask[~inside].sum() <= 2  # no object was left without a box


def test_sanitize_drops_small_boxes_with_their_labels():
    image, target = sample(50, 40, [[0, 0, 10, 10], [5, 5, 5.5, 20], [45, 30, 60, 50]])
    image, target = SanitizeBoundingBoxes(min_size=3)(image, target)
    assert target["boxes"].tolist() == [[0, 0, 10, 10], [45, 30, 50, 40]]
    assert target["labels"].tolist() == [0, 2] and len(target["area"]) == 2


def test_convert_boxes_gives_normalised_cxcywh_and_pixel_area():
    image, target = ConvertBoxes("cxcywh", normalize=True)(*sample(50, 40, [[10, 0, 30, 10]]))
    assert torch.allclose(target["boxes"], torch.tensor([[0.4, 0.125, 0.4, 0.25]]))
    assert target["area"].tolist() == [200.0]


@pytest.mark.parametrize("letterbox", [False, True])
def test_preprocess_image_matches_the_eval_pipeline(letterbox):
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    val = Compose([{"type": "Resize", "size": [32, 48], "letterbox": letterbox}, {"type": "ConvertPILImage"},
                   {"type": "Normalize"}])
    expected, _ = val(pil, sample(53, 37, [])[1])
    tensor, meta = preprocess_image(pil, [32, 48], letterbox=letterbox, normalize=True)
    assert torch.equal(tensor, expected)
    assert meta["orig_size"] == (53, 37)
