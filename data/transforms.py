"""Per-image transforms, registered by name and composed from YAML (`{type: Name, ...}` rows).

A sample is `(image, target)`: a PIL image (later a float tensor) and a dict whose `boxes` is a
torchvision BoundingBoxes (xyxy pixels until ConvertBoxes) and whose other per-box keys (`labels`,
`area`, `iscrowd`) stay aligned with the boxes. torchvision.transforms.v2 ops work on this directly.

`data.pipeline.Compose` builds them from a config and applies the augmentation policy.

`Resize` (stretch or letterbox) is the one resize used by training, evaluation and
`preprocess_image` (predict/export), so the three see identical pixels.
"""
from __future__ import annotations

import random
from typing import Annotated, Literal

import PIL.Image
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from pydantic import Field, PositiveInt

from core.errors import ConfigError
from core.registry import Registry
from core.schema import ImageSize

TRANSFORMS = Registry("transform")  # data.mosaic adds Mosaic
PER_BOX_KEYS = ("labels", "area", "iscrowd")
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


register_transform = TRANSFORMS.register
for _op in (T.RandomPhotometricDistort, T.RandomZoomOut, T.RandomHorizontalFlip):
    register_transform(_op)


def make_boxes(xyxy, canvas_hw) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(torch.as_tensor(xyxy, dtype=torch.float32).reshape(-1, 4), format="XYXY",
                                    canvas_size=tuple(int(v) for v in canvas_hw), clamping_mode="hard")


def image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or a [C,H,W] tensor."""
    h, w = F.get_size(image)
    return w, h


def clamp_xyxy(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    limit = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limit)


def select_boxes(target: dict, keep: torch.Tensor) -> dict:
    """The target with only the boxes (and their per-box values) where `keep` is true."""
    out = dict(target)
    out["boxes"] = tv_tensors.wrap(target["boxes"][keep], like=target["boxes"])
    for key in PER_BOX_KEYS:
        if key in target:
            out[key] = target[key][keep]
    return out


@register_transform
class RandomIoUCrop(T.RandomIoUCrop):
    """torchvision's SSD crop, applied with probability `p`; images without boxes pass unchanged."""

    def __init__(self, min_scale: float = 0.3, max_scale: float = 1.0, min_aspect_ratio: float = 0.5,
                 max_aspect_ratio: float = 2.0, sampler_options: list[float] | None = None, trials: PositiveInt = 40,
                 p: Probability = 1.0):
        super().__init__(min_scale, max_scale, min_aspect_ratio, max_aspect_ratio, sampler_options, trials)
        self.p = p

    def forward(self, image, target):
        if len(target["boxes"]) == 0 or torch.rand(1) >= self.p:
            return image, target
        return super().forward(image, target)


@register_transform
class SanitizeBoundingBoxes:
    """Clamps boxes to the image, then drops those narrower or shorter than `min_size` pixels
    (or with non-finite coordinates), together with their labels, areas and crowd flags."""

    def __init__(self, min_size: float = 1.0):
        self.min_size = min_size

    def __call__(self, image, target):
        height, width = target["boxes"].canvas_size
        boxes = clamp_xyxy(target["boxes"].as_subclass(torch.Tensor), width, height)
        target = dict(target, boxes=tv_tensors.wrap(boxes, like=target["boxes"]))
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.isfinite(boxes).all(1) & (wh >= self.min_size).all(1)
        return image, select_boxes(target, keep)


def resize_geometry(width: int, height: int, size_hw, letterbox: bool):
    """Output (w, h) of the resized content, scale (sx, sy) and padding (left, top) for one image."""
    out_h, out_w = size_hw
    if not letterbox:
        return (out_w, out_h), (out_w / width, out_h / height), (0, 0)
    ratio = min(out_w / width, out_h / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    return (new_w, new_h), (new_w / width, new_h / height), ((out_w - new_w) // 2, (out_h - new_h) // 2)


def resize_image(image: PIL.Image.Image, size_hw, letterbox: bool = False, fill: int = 114):
    """Stretch `image` to size_hw = (h, w), or fit it inside and pad (letterbox).

    Returns (image, scale (sx, sy), pad (left, top)); a point p maps to p * scale + pad."""
    (new_w, new_h), scale, pad = resize_geometry(*image.size, size_hw, letterbox)
    resized = F.resize(image, [new_h, new_w], antialias=True)
    if letterbox:
        canvas = PIL.Image.new(image.mode, (size_hw[1], size_hw[0]), (fill,) * len(image.getbands()))
        canvas.paste(resized, pad)
        resized = canvas
    return resized, scale, pad


def as_size_hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))



@register_transform
class Resize:
    """Resize to `size` ([h, w] or one int for a square): stretch, or `letterbox: true` to keep the
    aspect ratio and pad with `fill`. Records `scale` (sx, sy) and `pad` (left, top) in the target
    so evaluation can map boxes back when Resize is the only geometric op."""

    def __init__(self, size: ImageSize = 640, letterbox: bool = False, fill: int = 114):
        self.size, self.letterbox, self.fill = as_size_hw(size), letterbox, fill

    def __call__(self, image, target):
        image, (sx, sy), (left, top) = resize_image(image, self.size, self.letterbox, self.fill)
        boxes = target["boxes"].as_subclass(torch.Tensor) * torch.tensor([sx, sy, sx, sy]) + torch.tensor([left, top, left, top])
        target = dict(target, boxes=make_boxes(boxes, self.size), scale=torch.tensor([sx, sy]),
                      pad=torch.tensor([float(left), float(top)]))
        return image, target


@register_transform
class ConvertPILImage:
    """PIL image -> float tensor [3, H, W], in [0, 1] when `scale`."""

    DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

    def __init__(self, dtype: Literal["float32", "float16", "bfloat16"] = "float32", scale: bool = True):
        if dtype not in self.DTYPES:
            raise ConfigError(f"ConvertPILImage dtype {dtype!r} is not supported", where="transforms: ConvertPILImage",
                              hint=f"use one of {', '.join(self.DTYPES)}")
        self.dtype, self.scale = self.DTYPES[dtype], scale

    def __call__(self, image, target):
        tensor = F.pil_to_tensor(image).to(self.dtype)
        return (tensor / 255.0 if self.scale else tensor), target


@register_transform
class Normalize:
    """Subtract mean and divide by std per channel (ImageNet statistics by default, for ViT backbones)."""

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD):
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image, target):
        return (image - self.mean) / self.std, target


@register_transform
class ConvertBoxes:
    """xyxy pixel boxes -> `fmt` (cxcywh), divided by the image size when `normalize`. Sets `area`
    to the box area in input pixels (what CopyBlend's area threshold compares with)."""

    def __init__(self, fmt: Literal["xyxy", "cxcywh", "xywh"] = "cxcywh", normalize: bool = True):
        self.fmt, self.normalize = fmt.lower(), normalize

    def __call__(self, image, target):
        xyxy = target["boxes"].as_subclass(torch.Tensor)
        boxes = F.convert_bounding_box_format(xyxy, old_format=tv_tensors.BoundingBoxFormat.XYXY,
                                              new_format=tv_tensors.BoundingBoxFormat[self.fmt.upper()])
        if self.normalize:
            w, h = image_size(image)
            boxes = boxes / torch.tensor([w, h, w, h], dtype=boxes.dtype)
        area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        return image, dict(target, boxes=boxes, area=area)


def preprocess_image(pil_image: PIL.Image.Image, imgsz=640, letterbox: bool = False, normalize=False):
    """The evaluation pipeline for one image (predict/export): resize exactly as `Resize` does, scale
    to [0, 1], then ImageNet-normalise when `normalize` is true (or a (mean, std) pair).

    Returns (tensor [3, H, W], meta) with meta = {orig_size (w, h), scale (sx, sy), pad (left, top)}."""
    image = pil_image.convert("RGB")
    resized, scale, pad = resize_image(image, as_size_hw(imgsz), letterbox)
    tensor, _ = ConvertPILImage()(resized, None)
    if normalize:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize is True else normalize
        tensor, _ = Normalize(mean, std)(tensor, None)
    return tensor, {"orig_size": image.size, "scale": scale, "pad": pad}


def restore_boxes(boxes_xyxy: torch.Tensor, scale, pad, orig_size=None) -> torch.Tensor:
    """Map xyxy boxes in network-input pixels back to the original image (undoing Resize)."""
    sx, sy = (float(v) for v in scale)
    left, top = (float(v) for v in pad)
    out = (boxes_xyxy - boxes_xyxy.new_tensor([left, top, left, top])) / boxes_xyxy.new_tensor([sx, sy, sx, sy])
    return out if orig_size is None else clamp_xyxy(out, *(float(v) for v in orig_size))
