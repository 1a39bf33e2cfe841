import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.box_ops import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, generalized_box_iou

coord = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False, width=32)
# any four coordinates: includes zero-size and inverted (x1 < x0) boxes
any_boxes = st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=6).map(
    lambda rows: torch.tensor(rows, dtype=torch.float32))
proper_box = st.tuples(coord, coord, st.floats(0.0625, 2.0, width=32), st.floats(0.0625, 2.0, width=32)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))
proper_boxes = st.lists(proper_box, min_size=1, max_size=6).map(lambda rows: torch.tensor(rows, dtype=torch.float32))


@settings(max_examples=60, deadline=None)
@given(proper_boxes, proper_boxes)
def test_giou_at_most_iou_and_symmetric(a, b):
    iou, _ = box_iou(a, b)
    giou = generalized_box_iou(a, b)
    assert (giou <= iou + 1e-6).all()
    assert torch.allclose(giou, generalized_box_iou(b, a).T, atol=1e-6)
    assert torch.allclose(iou, box_iou(b, a)[0].T, atol=1e-6)
    assert ((iou >= 0) & (iou <= 1 + 1e-6)).all() and ((giou >= -1 - 1e-6) & (giou <= 1 + 1e-6)).all()


@settings(max_examples=40, deadline=None)
@given(proper_boxes)
def test_identical_boxes_have_iou_and_giou_one(a):
    assert torch.allclose(box_iou(a, a)[0].diagonal(), torch.ones(len(a)), atol=1e-5)
    assert torch.allclose(generalized_box_iou(a, a).diagonal(), torch.ones(len(a)), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(any_boxes, any_boxes)
def test_degenerate_boxes_give_finite_values_and_gradients(a, b):
    a.requires_grad_(True)
    giou = generalized_box_iou(a, b)
    assert torch.isfinite(giou).all() and (giou <= 1 + 1e-6).all() and (giou >= -1 - 1e-6).all()
    giou.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_hand_computed_overlaps():
    # unit square vs the square shifted by half: inter 0.5, union 1.5, enclosing 1.5 x 1
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.5, 0.0, 1.5, 1.0], [2.0, 0.0, 3.0, 1.0]])
    iou, union = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[1 / 3, 0.0]]))
    assert torch.allclose(union, torch.tensor([[1.5, 2.0]]))
    # disjoint: enclosing 3 x 1, union 2 -> giou = 0 - 1/3
    assert torch.allclose(generalized_box_iou(a, b), torch.tensor([[1 / 3, -1 / 3]]))
    # two zero-area boxes: 0 instead of NaN
    point = torch.tensor([[0.2, 0.2, 0.2, 0.2]])
    assert generalized_box_iou(point, point).item() == 0.0


def test_format_round_trip_and_negative_sizes():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.0, 0.3]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.1, 0.75, 0.1, 1.05]]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), cxcywh)
    # a negative width is clamped to zero, as in DETR's conversion
    assert torch.allclose(box_cxcywh_to_xyxy(torch.tensor([0.5, 0.5, -0.2, 0.2])), torch.tensor([0.5, 0.4, 0.5, 0.6]))
