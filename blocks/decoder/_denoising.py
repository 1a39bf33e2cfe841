"""Contrastive denoising queries (DINO, ICLR 2023, https://arxiv.org/abs/2203.03605), as RT-DETR / D-FINE use them.

Each ground-truth box enters the decoder twice per group: a positive copy, jittered by less than
half its size (the decoder must reconstruct the box), and a negative copy, jittered by between one
and two half-sizes (the decoder must call it background). Labels are flipped at random with
probability label_noise_ratio / 2. Images are padded to the batch's largest box count; groups are
repeated until about `num_denoising` queries are made. An attention mask keeps groups apart and
hides every denoising query from the matching queries.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from core.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid


def contrastive_denoising_group(targets: list[dict], num_classes: int, num_queries: int, class_embed: nn.Embedding,
                                num_denoising: int = 100, label_noise_ratio: float = 0.5,
                                box_noise_scale: float = 1.0):
    """Noised queries for one batch.

    Returns (query_content [B, D, C], query_boxes_unact [B, D, 4] (logits of cxcywh),
    attn_mask [D + num_queries]^2 bool (True = may not attend), dn_meta) with D denoising queries.
    dn_meta = {'dn_positive_idx': per image, the indices of its positive queries (group by group),
    'dn_num_group': groups, 'dn_num_split': [D, num_queries]}. With no boxes in the whole batch the
    first three are None and dn_meta says 0 groups, so the loss terms still exist (distributed
    training must not wait for a loss that one rank skipped).
    """
    if num_denoising <= 0:
        return None, None, None, None
    num_gts = [len(t["labels"]) for t in targets]
    device = targets[0]["labels"].device
    max_gt = max(num_gts)
    if max_gt == 0:
        return None, None, None, {"dn_positive_idx": None, "dn_num_group": 0, "dn_num_split": [0, num_queries]}

    num_group = max(num_denoising // max_gt, 1)
    batch = len(targets)
    # the batch's targets padded to max_gt per image, written in one indexed copy each (slots are
    # computed on the host from the counts: no per-image copies, no device round-trip); padded slots
    # carry the class index num_classes: the embedding's padding row (zeros)
    slots = torch.cat([torch.arange(n) + i * max_gt for i, n in enumerate(num_gts)]).to(device)
    labels = torch.full([batch * max_gt], num_classes, dtype=torch.int32, device=device)
    labels[slots] = torch.cat([t["labels"] for t in targets]).to(torch.int32)
    boxes = torch.zeros([batch * max_gt, 4], device=device)
    boxes[slots] = torch.cat([t["boxes"] for t in targets]).to(boxes.dtype)
    is_real = torch.zeros([batch * max_gt], dtype=torch.bool, device=device)
    is_real[slots] = True
    labels, boxes, is_real = labels.view(batch, max_gt), boxes.view(batch, max_gt, 4), is_real.view(batch, max_gt)
    # layout along the query axis: group 0 [positives | negatives], group 1 [...], ...
    labels = labels.tile([1, 2 * num_group])
    boxes = boxes.tile([1, 2 * num_group, 1])
    is_real = is_real.tile([1, 2 * num_group])
    is_negative = torch.zeros([batch, 2 * max_gt, 1], device=device)
    is_negative[:, max_gt:] = 1
    is_negative = is_negative.tile([1, num_group, 1])
    total = 2 * max_gt * num_group

    group_offsets = torch.arange(num_group, device=device)[:, None] * (2 * max_gt)
    positive_idx = tuple((group_offsets + torch.arange(n, device=device)[None]).flatten() for n in num_gts)

    # random draws in the reference implementation's order, so one seed gives the same noise
    if label_noise_ratio > 0:
        flip = torch.rand_like(labels, dtype=torch.float) < (label_noise_ratio * 0.5)
        random_labels = torch.randint_like(flip, 0, num_classes, dtype=labels.dtype)
        labels = torch.where(flip & is_real, random_labels, labels)
    if box_noise_scale > 0:
        corners = box_cxcywh_to_xyxy(boxes)
        half_size = torch.tile(boxes[..., 2:] * 0.5, [1, 1, 2]) * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        magnitude = torch.rand_like(boxes)
        # positives move by [0, 1) half-sizes, negatives by [1, 2)
        magnitude = (magnitude + 1.0) * is_negative + magnitude * (1 - is_negative)
        corners = (corners + sign * magnitude * half_size).clip(min=0.0, max=1.0)
        # a corner pushed past its partner flips the box; keep its size positive
        boxes = box_xyxy_to_cxcywh(corners).abs()
    boxes_unact = inverse_sigmoid(boxes)
    dn_meta = {"dn_positive_idx": positive_idx, "dn_num_group": num_group, "dn_num_split": [total, num_queries],
               "dn_labels": labels, "dn_boxes_unact": boxes_unact}
    return class_embed(labels), boxes_unact, denoising_mask(total, num_group, num_queries, device), dn_meta


def denoising_mask(total: int, num_group: int, num_queries: int, device) -> torch.Tensor:
    """[total + num_queries]^2 bool (True = may not attend): groups apart, every denoising query hidden
    from the matching queries (which may be seen by all)."""
    size = total + num_queries
    group_id = torch.arange(total, device=device) // (total // num_group)
    attn_mask = torch.zeros([size, size], dtype=torch.bool, device=device)
    attn_mask[total:, :total] = True
    attn_mask[:total, :total] = group_id[:, None] != group_id[None, :]
    return attn_mask


def denoising_queries(decoder, targets, num_queries: int):
    """A DETR decoder's denoising groups in training (its num_denoising, label_noise_ratio,
    box_noise_scale, denoising_class_embed); four Nones in eval, without targets, or when off.

    A decoder whose `replayed_denoising` holds another decoder's dn_meta (set by `replay_denoising`)
    takes those noised labels and boxes instead, in eval mode too: a distillation teacher answers the
    student's own denoising queries."""
    replayed = getattr(decoder, "replayed_denoising", None)
    if replayed is not None:
        total, num_group = replayed["dn_num_split"][0], replayed["dn_num_group"]
        labels = replayed["dn_labels"]
        meta = {**replayed, "dn_num_split": [total, num_queries]}
        return (decoder.denoising_class_embed(labels), replayed["dn_boxes_unact"],
                denoising_mask(total, num_group, num_queries, labels.device), meta)
    if not (decoder.training and decoder.num_denoising > 0 and targets is not None):
        return None, None, None, None
    return contrastive_denoising_group(
        targets, decoder.num_classes, num_queries, decoder.denoising_class_embed,
        num_denoising=decoder.num_denoising, label_noise_ratio=decoder.label_noise_ratio,
        box_noise_scale=decoder.box_noise_scale)


@contextmanager
def replay_denoising(decoder, dn_meta: dict):
    """Within the block, `decoder` (with a denoising embedding of the same classes) runs the denoising
    queries that `dn_meta` describes (noised labels and boxes of another decoder's step) in front of
    its own queries."""
    decoder.replayed_denoising = dn_meta
    try:
        yield
    finally:
        decoder.replayed_denoising = None
