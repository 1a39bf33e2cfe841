"""Batch-level mixing (run in the collate function, on normalised cxcywh targets).

MixUp (DEIM): every image is blended with the previous one in the batch (ratio ~0.5) and takes its
boxes too. CopyBlend (DEIMv2): objects of at least `area_threshold` input pixels are cut from images
of the batch and blended (or pasted) at random places into other images, optionally with a margin
of surrounding context (`with_expand`); the pasted boxes are added to those images' targets.
"""
from __future__ import annotations

import random

import torch


def _extend(target: dict, boxes: torch.Tensor, labels: torch.Tensor, area: torch.Tensor) -> dict:
    out = dict(target)
    out["boxes"] = torch.cat([target["boxes"], boxes.to(target["boxes"].dtype)])
    out["labels"] = torch.cat([target["labels"], labels])
    out["area"] = torch.cat([target["area"], area.to(target["area"].dtype)])
    out["iscrowd"] = torch.cat([target["iscrowd"], torch.zeros(len(labels), dtype=target["iscrowd"].dtype)])
    return out


def mixup(images: torch.Tensor, targets: list[dict], beta: float):
    """Blend image i with image i-1 (weights beta, 1-beta); each keeps both sets of boxes."""
    mixed = images * beta + images.roll(shifts=1, dims=0) * (1.0 - beta)
    shifted = targets[-1:] + targets[:-1]
    return mixed, [_extend(t, s["boxes"], s["labels"], s["area"]) for t, s in zip(targets, shifted)]


def copyblend(images: torch.Tensor, targets: list[dict], beta: float, area_threshold: float = 100,
              num_objects: int = 3, random_num_objects: bool = False, with_expand: bool = False,
              expand_ratios=(0.1, 0.25), blend: bool = True):
    height, width = images.shape[-2:]
    pool = [(i, box, label, area) for i, t in enumerate(targets)
            for box, label, area in zip(t["boxes"], t["labels"], t["area"]) if area >= area_threshold]
    if not pool:
        return images, targets
    out_images, out_targets = images.clone(), list(targets)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    for i in range(len(images)):
        count = min(num_objects, len(pool))
        count = random.randint(1, count) if random_num_objects else count
        boxes, labels, areas = [], [], []
        for src, box, label, area in random.sample(pool, count):
            cx, cy, bw, bh = (box.float() * scale).tolist()
            sx1, sy1 = max(int(cx - bw / 2), 0), max(int(cy - bh / 2), 0)
            sx2, sy2 = min(int(cx + bw / 2), width), min(int(cy + bh / 2), height)
            w, h = sx2 - sx1, sy2 - sy1
            if w <= 0 or h <= 0:
                continue
            x1 = random.randint(0, width - w) if w < width else 0
            y1 = random.randint(0, height - h) if h < height else 0
            boxes.append(torch.tensor([x1 + w / 2, y1 + h / 2, w, h]) / scale)
            labels.append(label)
            areas.append(area)
            x2, y2 = x1 + w, y1 + h
            if with_expand:
                # grow the copied patch by a margin that fits both in the source and at the destination
                ratio = random.uniform(*expand_ratios)
                mx, my = int(w * ratio), int(h * ratio)
                left = min(sx1 - max(sx1 - mx, 0), x1 - max(x1 - mx, 0))
                top = min(sy1 - max(sy1 - my, 0), y1 - max(y1 - my, 0))
                right = min(min(sx2 + mx, width) - sx2, min(x2 + mx, width) - x2)
                bottom = min(min(sy2 + my, height) - sy2, min(y2 + my, height) - y2)
                sx1, sy1, sx2, sy2 = sx1 - left, sy1 - top, sx2 + right, sy2 + bottom
                x1, y1, x2, y2 = x1 - left, y1 - top, x2 + right, y2 + bottom
            patch = images[src, :, sy1:sy2, sx1:sx2]
            region = out_images[i, :, y1:y2, x1:x2]
            out_images[i, :, y1:y2, x1:x2] = region * beta + patch * (1 - beta) if blend else patch
        if boxes:
            out_targets[i] = _extend(targets[i], torch.stack(boxes), torch.stack(labels), torch.stack(areas))
    return out_images, out_targets
