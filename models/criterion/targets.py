"""Checks on the training targets, run before any loss or matcher indexes with them."""
from __future__ import annotations

import torch

from core.errors import DetrZooError


class TargetError(DetrZooError, ValueError):
    """A training target the criterion cannot use (a class id out of range, a malformed box tensor)."""


def _image_name(target: dict, position: int) -> str:
    image_id = target.get("image_id")
    if isinstance(image_id, torch.Tensor):
        image_id = image_id.flatten().tolist()
        image_id = image_id[0] if len(image_id) == 1 else image_id
    return f"image_id {image_id}" if image_id is not None else f"batch position {position}"


def check_targets(targets: list[dict], num_classes: int) -> None:
    """Raise TargetError naming the image when labels fall outside [0, num_classes) or boxes are not [N, 4]."""
    for position, target in enumerate(targets):
        labels, boxes = target["labels"], target["boxes"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or len(boxes) != len(labels):
            raise TargetError(f"boxes of shape {tuple(boxes.shape)} do not fit {len(labels)} labels",
                              where=_image_name(target, position),
                              hint="each target needs `boxes` [N, 4] (cxcywh, normalised) and `labels` [N]")
        if labels.numel() == 0:
            continue
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            class_id = int(labels[bad][0])
            raise TargetError(f"class id {class_id} is outside [0, {num_classes})",
                              where=_image_name(target, position),
                              hint="map dataset categories to contiguous labels 0..nc-1, or raise the model's `nc`")
