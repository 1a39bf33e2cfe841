"""A small deterministic COCO dataset of coloured shapes on textured backgrounds, for tests and demos.

    python -m data.demo --out DIR [--train 64 --val 16 --imgsz 256 --seed 0]

Writes DIR/train and DIR/val, each with JPEG images and `_annotations.coco.json`. Three classes
(category ids 1, 2, 3 like real COCO exports: circle, square, triangle); each image holds 1-6 shapes of
random colour and size (6-45% of the image side), and about one image in eight is a negative.
The same seed gives the same files."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CATEGORIES = [{"id": 1, "name": "circle", "supercategory": "shape"},
              {"id": 2, "name": "square", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"}]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Muted texture: a colour gradient, stripes at a random angle, and blurred noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(60, 190, 3)
    tilt = rng.uniform(-50, 50, (2, 3))
    angle, period = rng.uniform(0, math.pi), rng.uniform(0.05, 0.25)
    stripes = 18 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    pixels = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1] + stripes[..., None]
    pixels += rng.normal(0, 14, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(0.8))


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area: near 1 when one shape would hide the other."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


def _draw_shape(draw: ImageDraw.ImageDraw, category: int, box, colour) -> list[float]:
    """Draws the shape inside box (x, y, s, s); returns its tight xywh box."""
    x, y, s, _ = box
    outline = tuple(int(c * 0.5) for c in colour)
    if category == 1:
        draw.ellipse([x, y, x + s - 1, y + s - 1], fill=colour, outline=outline, width=2)
        return [x, y, s, s]
    if category == 2:
        draw.rectangle([x, y, x + s - 1, y + s - 1], fill=colour, outline=outline, width=2)
        return [x, y, s, s]
    height = round(s * math.sqrt(3) / 2)
    top = y + (s - height) // 2
    draw.polygon([(x + s / 2, top), (x, top + height - 1), (x + s - 1, top + height - 1)], fill=colour, outline=outline)
    return [x, top, s, height]


def make_split(out: Path, count: int, imgsz: int, rng: np.random.Generator, first_id: int = 1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    coco = {"info": {"description": "detrzoo demo shapes"}, "images": [], "annotations": [], "categories": CATEGORIES}
    for k in range(count):
        image_id = first_id + k
        image = _background(rng, imgsz)
        draw = ImageDraw.Draw(image)
        n_objects = 0 if rng.random() < 0.125 else int(rng.integers(1, 7))
        placed = []
        for _ in range(n_objects * 10):  # rejection sampling against heavy overlap
            if len(placed) == n_objects:
                break
            s = int(rng.uniform(0.06, 0.45) * imgsz)
            x, y = int(rng.integers(0, imgsz - s)), int(rng.integers(0, imgsz - s))
            if all(_overlap((x, y, s, s), p[1]) < 0.25 for p in placed):
                placed.append((int(rng.integers(1, 4)), (x, y, s, s)))
        for category, box in placed:
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if max(colour) - min(colour) < 90:  # keep shapes saturated so they stand out from the muted texture
                colour = (colour[0], 255 - colour[0] // 3, colour[2] // 3)
            bbox = _draw_shape(draw, category, box, colour)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": category,
                                        "bbox": [float(v) for v in bbox], "area": float(bbox[2] * bbox[3]), "iscrowd": 0})
        name = f"{image_id:06d}.jpg"
        image.save(out / name, quality=92)
        coco["images"].append({"id": image_id, "file_name": name, "width": imgsz, "height": imgsz})
    (out / "_annotations.coco.json").write_text(json.dumps(coco, indent=1))
    return coco


def make_demo(out, train: int = 64, val: int = 16, imgsz: int = 256, seed: int = 0) -> dict[str, Path]:
    """Write the demo dataset; returns {split: annotation file}."""
    out, rng = Path(out), np.random.default_rng(seed)
    make_split(out / "train", train, imgsz, rng, first_id=1)
    make_split(out / "val", val, imgsz, rng, first_id=100001)
    return {split: out / split / "_annotations.coco.json" for split in ("train", "val")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=64, help="training images")
    parser.add_argument("--val", type=int, default=16, help="validation images")
    parser.add_argument("--imgsz", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = make_demo(args.out, args.train, args.val, args.imgsz, args.seed)
    for split, path in files.items():
        coco = json.loads(path.read_text())
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {path}")


if __name__ == "__main__":
    main()
