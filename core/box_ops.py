"""Box formats and overlaps shared by the decoders, matchers and criteria.

Boxes are (cx, cy, w, h) or (x0, y0, x1, y1) along the last dimension. Overlaps are pairwise
([N, M]) as in DETR. A degenerate box (zero or negative width or height) counts as zero area, and a
ratio whose denominator is (almost) zero is taken over 1 instead, so a collapsed prediction never
gives NaN or inf in the loss or its gradient; wherever a denominator exceeds 1e-12 (any box of
real size) the results equal the usual formulas exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1); negative sizes are treated as zero."""
    cx, cy, w, h = boxes.unbind(-1)
    half_w, half_h = 0.5 * w.clamp(min=0.0), 0.5 * h.clamp(min=0.0)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x0, y0, x1, y1) -> (cx, cy, w, h)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes; a box with x1 < x0 or y1 < y0 has area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


_TINY_AREA = 1e-12


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # num <= den here, so a (near-)zero denominator has a (near-)zero numerator; dividing it by 1
    # keeps the value ~0 and the gradient finite (num / den**2 would overflow for subnormal den)
    return num / torch.where(den > _TINY_AREA, den, torch.ones_like(den))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of xyxy boxes [N,4] x [M,4] -> (iou [N,M], union [N,M])."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return _safe_div(inter, union), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al., CVPR 2019) of xyxy boxes -> [N, M] in [-1, 1]."""
    iou, union = box_iou(boxes1, boxes2)
    top_left = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(enclosing - union, enclosing)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) for x clipped to [0, 1], with both sides kept >= eps so boxes at the border stay finite."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
