"""Mosaic (YOLOv4-style, as DEIM uses it): four images on a 2x2 grid, then one random affine.

The sample's own image and three others (from a cache of recently seen images, or from the
dataset) are resized so the shorter side is `output_size`, pasted on a canvas of twice the largest
tile, and the whole canvas is rotated/translated/scaled by torchvision's RandomAffine, which also
moves the boxes. Later ops (Resize, SanitizeBoundingBoxes) bring it to the network input.
"""
from __future__ import annotations

import random

import PIL.Image
import torch
import torchvision.transforms.v2 as T

from pydantic import PositiveInt

from data.transforms import PER_BOX_KEYS, Probability, image_size, make_boxes, register_transform


@register_transform
class Mosaic:
    uses_dataset = True

    def __init__(self, output_size: PositiveInt = 320, max_size: PositiveInt | None = None, rotation_range: float = 0,
                 translation_range: tuple[float, float] = (0.1, 0.1), scaling_range: tuple[float, float] = (0.5, 1.5),
                 probability: Probability = 1.0,
                 fill_value: int = 114, use_cache: bool = True, max_cached_images: int = 50, random_pop: bool = True):
        self.resize = T.Resize(size=output_size, max_size=max_size)
        self.affine = T.RandomAffine(degrees=rotation_range, translate=translation_range, scale=scaling_range,
                                     fill=fill_value)
        self.probability, self.fill_value = probability, fill_value
        self.use_cache, self.max_cached_images, self.random_pop = use_cache, max_cached_images, random_pop
        self.cache: list[tuple] = []  # per worker process: (image, target) of recent samples

    def _tiles(self, image, target, dataset) -> list[tuple]:
        first = self.resize(image, target)
        if not self.use_cache:
            others = [self.resize(*dataset.load_item(i)) for i in random.choices(range(len(dataset)), k=3)]
            return [first, *others]
        self.cache.append(first)
        if len(self.cache) > self.max_cached_images:
            # never evict the sample just added
            self.cache.pop(random.randint(0, len(self.cache) - 2) if self.random_pop else 0)
        # tiles are only read (pasted, concatenated), so cached entries need no copy
        return [first] + [self.cache[i] for i in random.choices(range(len(self.cache)), k=3)]

    def __call__(self, image, target, dataset):
        if self.probability < 1.0 and random.random() > self.probability:
            return image, target
        tiles = self._tiles(image, target, dataset)
        cell_w = max(image_size(im)[0] for im, _ in tiles)
        cell_h = max(image_size(im)[1] for im, _ in tiles)
        canvas = PIL.Image.new(tiles[0][0].mode, (2 * cell_w, 2 * cell_h), 0)
        boxes = []
        for k, (tile, tile_target) in enumerate(tiles):
            dx, dy = (k % 2) * cell_w, (k // 2) * cell_h
            canvas.paste(tile, (dx, dy))
            boxes.append(tile_target["boxes"].as_subclass(torch.Tensor) + torch.tensor([dx, dy, dx, dy]))
        merged = dict(target, boxes=make_boxes(torch.cat(boxes), (2 * cell_h, 2 * cell_w)))
        for key in PER_BOX_KEYS:
            if key in target:
                merged[key] = torch.cat([t[key] for _, t in tiles])
        return self.affine(canvas, merged)
