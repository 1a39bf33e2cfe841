"""Box losses: L1 and GIoU on matched boxes, and D-FINE's distribution losses on edge offsets.

D-FINE predicts each box edge as a distribution over reg_max + 1 bins whose positions follow a
non-uniform weighting function W(n). FGL pulls that distribution towards the two bins around the
ground-truth offset (weighted by IoU); DDF distils the final layer's distributions into earlier layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou


def matched_iou(src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    """IoU of each matched (prediction, target) pair of cxcywh boxes -> [N]."""
    return torch.diag(box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes))[0])


def matched_giou(src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    """Generalized IoU of each matched pair of cxcywh boxes -> [N]."""
    return torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)))


def l1_and_giou_losses(src_boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float,
                       giou_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed L1 and (1 - GIoU) of matched cxcywh boxes, each divided by num_boxes."""
    l1 = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
    giou = 1 - matched_giou(src_boxes, target_boxes)
    if giou_weight is not None:
        giou = giou * giou_weight
    return l1, giou.sum() / num_boxes


def weighting_function(reg_max: int, up: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
    """D-FINE's bin positions W(n), n = 0..reg_max: 0 in the middle, growing geometrically outwards
    to +-up*reg_scale, with the two end bins at +-2*up*reg_scale."""
    outer = (up.abs() * reg_scale.abs()).reshape(1)
    step = (outer + 1) ** (2 / (reg_max - 2))
    right = torch.cat([step ** i - 1 for i in range(1, reg_max // 2)])
    return torch.cat([-2 * outer, -right.flip(0), torch.zeros_like(outer), right, 2 * outer])


def edge_offset_targets(ref_points: torch.Tensor, target_xyxy: torch.Tensor, reg_max: int,
                        reg_scale: torch.Tensor, up: torch.Tensor, eps: float = 0.1):
    """Ground-truth edge offsets from cxcywh reference points as fractional bin positions.

    Returns (bin [N*4] in [0, reg_max - eps], weight_right [N*4], weight_left [N*4]): the offset lies
    between bins floor(bin) and floor(bin)+1, split linearly by the W(n) distance to each."""
    reg_scale = reg_scale.abs()
    half = 0.5 * reg_scale
    scale_w = ref_points[:, 2] / reg_scale + 1e-16
    scale_h = ref_points[:, 3] / reg_scale + 1e-16
    offsets = torch.stack([
        (ref_points[:, 0] - target_xyxy[:, 0]) / scale_w - half,
        (ref_points[:, 1] - target_xyxy[:, 1]) / scale_h - half,
        (target_xyxy[:, 2] - ref_points[:, 0]) / scale_w - half,
        (target_xyxy[:, 3] - ref_points[:, 1]) / scale_h - half,
    ], -1).reshape(-1)

    positions = weighting_function(reg_max, up, reg_scale)
    left = ((positions[None, :] - offsets[:, None]) <= 0).sum(1) - 1
    bins = left.to(offsets.dtype)
    weight_right = torch.zeros_like(bins)
    weight_left = torch.zeros_like(bins)

    inside = (left >= 0) & (left < reg_max)
    lo = left[inside]
    to_left = (offsets[inside] - positions[lo]).abs()
    to_right = (positions[lo + 1] - offsets[inside]).abs()
    weight_right[inside] = to_left / (to_left + to_right)
    weight_left[inside] = 1.0 - weight_right[inside]
    # beyond the outermost bins all the weight goes to the nearest end
    below, above = left < 0, left >= reg_max
    weight_left[below], bins[below] = 1.0, 0.0
    weight_right[above], bins[above] = 1.0, reg_max - 0.1
    return bins.clamp(0, reg_max - eps).detach(), weight_right.detach(), weight_left.detach()


def fine_grained_localization_loss(pred_corners: torch.Tensor, target_bins: torch.Tensor,
                                   weight_right: torch.Tensor, weight_left: torch.Tensor,
                                   iou_weight: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """FGL (D-FINE, ICLR 2025): cross-entropy of each edge distribution [N*4, reg_max+1] to its two
    neighbouring target bins, interpolated by the bin weights, scaled by the box IoU, / num_boxes."""
    left = target_bins.long()
    loss = (F.cross_entropy(pred_corners, left, reduction="none") * weight_left
            + F.cross_entropy(pred_corners, left + 1, reduction="none") * weight_right)
    return (loss * iou_weight.float()).sum() / num_boxes


def decoupled_distillation_loss(pred_corners: torch.Tensor, teacher_corners: torch.Tensor,
                                weight: torch.Tensor, matched: torch.Tensor, num_pos: torch.Tensor,
                                num_neg: torch.Tensor, temperature: float = 5.0) -> torch.Tensor:
    """DDF (D-FINE, ICLR 2025): KL from the teacher's (final layer's) edge distributions to these
    ones at `temperature`, each edge weighted by `weight`; matched and unmatched edges are averaged
    apart and mixed in proportion num_pos : num_neg so neither group swamps the other."""
    kl = F.kl_div(F.log_softmax(pred_corners / temperature, dim=1),
                  F.softmax(teacher_corners.detach() / temperature, dim=1), reduction="none").sum(-1)
    per_edge = weight * temperature ** 2 * kl
    # masked means (an empty group contributes 0), computed without asking the device which groups are empty
    zero = per_edge.new_zeros(())
    pos = torch.where(matched, per_edge, zero).sum() / matched.sum().clamp(min=1)
    neg = torch.where(matched, zero, per_edge).sum() / (~matched).sum().clamp(min=1)
    return (pos * num_pos + neg * num_neg) / (num_pos + num_neg)
