"""Matchers: which prediction answers which ground-truth box.

HungarianMatcher builds, per image, a [queries x targets] cost and solves the assignment with
scipy's linear_sum_assignment, so each target gets exactly one query (DETR, ECCV 2020). The
cost is cost_class * focal-style class cost + cost_bbox * L1 + cost_giou * (-GIoU). From
`matcher_change_epoch` on (when `change_matcher` is set) DEIMv2 instead ranks pairs by
score * IoU^iou_order_alpha, preferring queries that are both confident and well placed.
More targets than queries is fine (Dense O2O): then every query is matched and some targets are not.

Also here: the fixed indices of the denoising groups, and D-FINE's union of matchings across layers.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from core.box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou
from models.criterion.targets import check_targets
from core.errors import ConfigError

Indices = list[tuple[torch.Tensor, torch.Tensor]]  # per image: (query indices, target indices)


def check_weights(weights: dict, where: str) -> None:
    """Each weight a finite number >= 0 (a string or .nan would fail, or poison, the first step)."""
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}", where=f"{where}.{key}")


class HungarianMatcher(nn.Module):
    def __init__(self, weight_dict: dict, use_focal_loss: bool = True, alpha: float = 0.25, gamma: float = 2.0,
                 change_matcher: bool = False, iou_order_alpha: float = 1.0, matcher_change_epoch: int = 10000):
        super().__init__()
        costs = ("cost_class", "cost_bbox", "cost_giou")
        if set(weight_dict) != set(costs):
            raise ConfigError(f"matcher weight_dict has {sorted(weight_dict)}; it takes exactly {', '.join(costs)}",
                              where="criterion.matcher.weight_dict",
                              hint="e.g. {cost_class: 2, cost_bbox: 5, cost_giou: 2}")
        check_weights(weight_dict, "criterion.matcher.weight_dict")
        self.cost_class = weight_dict["cost_class"]
        self.cost_bbox = weight_dict["cost_bbox"]
        self.cost_giou = weight_dict["cost_giou"]
        if self.cost_class == 0 and self.cost_bbox == 0 and self.cost_giou == 0:
            raise ConfigError("all matching costs are 0", where="criterion.matcher.weight_dict",
                              hint="give cost_class, cost_bbox or cost_giou a positive weight")
        self.use_focal_loss = use_focal_loss
        self.alpha, self.gamma = alpha, gamma
        self.change_matcher = change_matcher
        self.iou_order_alpha = iou_order_alpha
        self.matcher_change_epoch = matcher_change_epoch

    def uses_iou_order(self, epoch: int) -> bool:
        return self.change_matcher and epoch >= self.matcher_change_epoch

    def cost(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, target_boxes: torch.Tensor,
             epoch: int = 0) -> torch.Tensor:
        """Matching cost [Q, N] of one image's queries (logits [Q, C], cxcywh boxes [Q, 4]) to its targets."""
        prob = logits.sigmoid() if self.use_focal_loss else logits.softmax(-1)
        prob = prob[:, labels]
        if self.uses_iou_order(epoch):
            iou = box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))[0]
            return -(prob * iou.pow(self.iou_order_alpha))
        if self.use_focal_loss:
            # focal loss of calling the query positive minus that of calling it negative
            negative = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
            positive = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
            class_cost = positive - negative
        else:
            class_cost = -prob
        l1_cost = torch.cdist(boxes, target_boxes, p=1)
        giou_cost = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return self.cost_bbox * l1_cost + self.cost_class * class_cost + self.cost_giou * giou_cost

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict], epoch: int = 0) -> Indices:
        """Per image (query indices, target indices), int64 on the CPU, each of length min(Q, N)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        check_targets(targets, logits.shape[-1])
        batch, queries = logits.shape[:2]
        labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
        # costs in fp32 at least (fp16/bf16 outputs are upcast; fp64 stays fp64)
        dtype = torch.promote_types(torch.promote_types(logits.dtype, boxes.dtype), torch.float32)
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.device, dtype)
        # one cost over the whole batch and a single transfer to the CPU; each image then reads its block
        cost = self.cost(logits.flatten(0, 1).to(dtype), boxes.flatten(0, 1).to(dtype), labels, target_boxes, epoch)
        # a NaN box (a diverging prediction) must not stop the solver; inf becomes the largest float
        cost = torch.nan_to_num(cost.view(batch, queries, -1).cpu(), nan=1.0)
        indices = []
        for image, block in enumerate(cost.split([len(t["labels"]) for t in targets], -1)):
            rows, cols = linear_sum_assignment(block[image].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def denoising_indices(dn_meta: dict, targets: list[dict]) -> Indices:
    """Fixed matching of the denoising queries: group g's positive query for target j answers target j.

    `dn_positive_idx[i]` lists image i's positive queries group by group, so the targets repeat
    0..N-1 once per group."""
    indices = []
    for positive, target in zip(dn_meta["dn_positive_idx"] or [None] * len(targets), targets):
        num_targets = len(target["labels"])
        if num_targets == 0 or positive is None:
            empty = torch.zeros(0, dtype=torch.int64)
            indices.append((empty, empty))
            continue
        target_idx = torch.arange(num_targets, dtype=torch.int64).tile(dn_meta["dn_num_group"])
        if len(positive) != len(target_idx):
            raise ValueError(f"dn_meta lists {len(positive)} positive queries for {num_targets} targets x "
                             f"{dn_meta['dn_num_group']} groups; the decoder's denoising and targets disagree")
        indices.append((positive.long().cpu(), target_idx))
    return indices


def union_indices(matchings: list[Indices]) -> Indices:
    """D-FINE's union set: every (query, target) pair that any layer matched, one target per query.

    A query matched to different targets by different layers keeps the target most layers agreed on."""
    result = []
    for per_image in zip(*matchings):
        pairs = torch.cat([torch.stack([rows, cols], 1) for rows, cols in per_image])
        unique, counts = torch.unique(pairs, return_counts=True, dim=0)
        unique = unique[torch.argsort(counts, descending=True)]
        # keep the first (most agreed) occurrence of each query, in that order
        queries, first_of = torch.unique(unique[:, 0], return_inverse=True)
        position = torch.arange(len(unique))
        first = torch.full((len(queries),), len(unique), dtype=torch.int64).scatter_reduce(
            0, first_of, position, reduce="amin")
        kept = unique[first.sort().values]
        result.append((kept[:, 0].long(), kept[:, 1].long()))
    return result


__all__ = ["HungarianMatcher", "Indices", "denoising_indices", "union_indices"]
