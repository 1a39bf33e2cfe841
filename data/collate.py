"""Batching: pad images to a common size, MixUp or CopyBlend inside their epoch windows, and
multi-scale training (a random square size per batch until `stop_epoch`), as DEIM/DEIMv2 do."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt, confloat

from data.mix import copyblend, mixup
from core.errors import ConfigError


def generate_scales(base_size: int, base_size_repeat: int) -> list[int]:
    """Sizes for multi-scale training: multiples of 32 from 0.75x to 1.25x `base_size`, with
    `base_size` itself repeated `base_size_repeat` times (so it is drawn more often). Sizes below 32
    (possible for tiny base sizes) are left out."""
    low, high = int(base_size * 0.75 / 32) * 32, int(base_size * 1.25 / 32) * 32
    steps = (base_size - low) // 32
    sizes = [low + 32 * i for i in range(steps)] + [base_size] * base_size_repeat + [high - 32 * i for i in range(steps)]
    return [s for s in sizes if s >= 32]


def pad_batch(images: list[torch.Tensor], targets: list[dict], keep_boxes: bool = False):
    """Stack images, padding each at the bottom/right to the largest height and width; normalised
    boxes are rescaled to the padded canvas and `size` becomes the canvas size. With `keep_boxes`
    (for models that take the padding mask), boxes stay normalised to each image and `size` stays
    its own, from which `padding_mask` tells the model where each image is."""
    height, width = max(im.shape[-2] for im in images), max(im.shape[-1] for im in images)
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    out = []
    for k, (im, t) in enumerate(zip(images, targets)):
        h, w = im.shape[-2:]
        batch[k, :, :h, :w] = im
        if (h, w) != (height, width) and not keep_boxes:
            t = dict(t, boxes=t["boxes"] * torch.tensor([w / width, h / height, w / width, h / height]),
                     size=torch.tensor([width, height], dtype=torch.int64))
        out.append(t)
    return batch, out


def padding_mask(images: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """[B, H, W] bool, True on each image's own pixels (its target's `size`, w h, from the top left)
    of a batch padded by `pad_batch(..., keep_boxes=True)`: the `pixel_mask` Deformable DETR takes."""
    mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
    for k, t in enumerate(targets):
        w, h = (int(v) for v in t["size"])
        mask[k, :h, :w] = True
    return mask


Probability = confloat(ge=0.0, le=1.0)


class BatchImageCollateFunction:
    def __init__(self, stop_epoch: int | None = None, ema_restart_decay: Probability = 0.9999,
                 base_size: PositiveInt = 640, base_size_repeat: NonNegativeInt | None = None,
                 mixup_prob: Probability = 0.0, mixup_epochs=(0, 0),
                 copyblend_prob: Probability = 0.0, copyblend_epochs=(0, 0), copyblend_type: str = "blend",
                 area_threshold: NonNegativeFloat = 100, num_objects: PositiveInt = 3, with_expand: bool = False,
                 expand_ratios=(0.1, 0.25), random_num_objects: bool = False, padding_mask: bool = False):
        """padding_mask: batch differently sized images for a model that takes the padding mask
        (Deformable DETR): boxes and `size` stay each image's own (see `pad_batch`)."""
        if copyblend_type not in ("blend", "copy"):
            raise ConfigError(f"copyblend_type must be blend or copy, got {copyblend_type!r}", where="collate_fn")
        if padding_mask and (mixup_prob > 0 or copyblend_prob > 0):
            raise ConfigError("padding_mask keeps each image's own box coordinates, and MixUp/CopyBlend mix whole "
                              "padded canvases", where="collate_fn", hint="set mixup_prob and copyblend_prob to 0")
        self.padding_mask = padding_mask
        self.base_size = base_size
        self.scales = generate_scales(base_size, base_size_repeat) if base_size_repeat is not None else None
        self.stop_epoch = stop_epoch if stop_epoch is not None else 10**9
        self.ema_restart_decay = ema_restart_decay
        self.mixup_prob, self.mixup_epochs = mixup_prob, list(mixup_epochs)
        self.copyblend_prob, self.copyblend_epochs = copyblend_prob, list(copyblend_epochs)
        self.copyblend_args = dict(area_threshold=area_threshold, num_objects=num_objects,
                                   random_num_objects=random_num_objects, with_expand=with_expand,
                                   expand_ratios=tuple(expand_ratios), blend=copyblend_type == "blend")
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()  # seen by (persistent) workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def __call__(self, items):
        images, targets = pad_batch([x[0] for x in items], [x[1] for x in items], keep_boxes=self.padding_mask)
        epoch, beta = self.epoch, random.uniform(0.45, 0.55)
        # one mixing op per batch: MixUp first, CopyBlend otherwise (as DEIMv2)
        if random.random() < self.mixup_prob and self.mixup_epochs[0] <= epoch < self.mixup_epochs[-1]:
            images, targets = mixup(images, targets, beta)
        elif self.copyblend_epochs[0] <= epoch < self.copyblend_epochs[-1] and random.random() < self.copyblend_prob:
            images, targets = copyblend(images, targets, beta, **self.copyblend_args)
        if self.scales is not None and epoch < self.stop_epoch:
            size = random.choice(self.scales)
            factor = torch.tensor([size / images.shape[-1], size / images.shape[-2]])  # w, h
            images = F.interpolate(images, size=size)
            # each image's own area scales with the canvas (the whole canvas without padding_mask)
            targets = [dict(t, size=(t["size"] * factor).round().to(torch.int64)) for t in targets]
        return images, targets
