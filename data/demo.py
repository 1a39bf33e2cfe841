"""A small deterministic COCO dataset of coloured shapes on textured backgrounds, for tests and demos.

    python -m data.demo --out DIR [--train 64 --val 16 --imgsz 256 --seed 0]
                        [--classes 3 --max-objects 6 --sizes 0.06 0.45 --clutter 0]

Writes DIR/train and DIR/val, each with JPEG images and `_annotations.coco.json`. By default three
classes (category ids 1, 2, 3 like real COCO exports: circle, square, triangle); each image holds 1-6
shapes of random colour and size (6-45% of the image side), and about one image in eight is a negative.
The same seed gives the same files.

Harder sets, for benchmarks that need a teacher to have something to teach (bench/distill.py): up to
eight classes (`classes`: + diamond, cross, ring, hexagon, star), more objects per image
(`max_objects`), smaller objects (`sizes`, as fractions of the side) and `clutter`: that many
unlabelled marks per image (strokes and irregular blobs in saturated colours) drawn behind the shapes.
With the defaults the files are byte for byte those of the three-class set."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "hexagon", "star")


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


def _regular_polygon(x, y, s, corners: int, inner: float = 1.0, turn: float = 0.0) -> list[tuple[float, float]]:
    """Corners of a regular polygon (a star when `inner` < 1: every other corner at that radius)
    inscribed in the square (x, y, s, s), first corner at angle `turn` from the top."""
    r, cx, cy = (s - 1) / 2, x + (s - 1) / 2, y + (s - 1) / 2
    points = []
    for k in range(corners):
        radius = r * (inner if k % 2 else 1.0)
        angle = turn + 2 * math.pi * k / corners
        points.append((cx + radius * math.sin(angle), cy - radius * math.cos(angle)))
    return points


def _tight(points) -> list[float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0 = math.floor(min(xs)), math.floor(min(ys))
    return [x0, y0, math.ceil(max(xs)) - x0 + 1, math.ceil(max(ys)) - y0 + 1]


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
    if category == 3:
        height = round(s * math.sqrt(3) / 2)
        top = y + (s - height) // 2
        draw.polygon([(x + s / 2, top), (x, top + height - 1), (x + s - 1, top + height - 1)], fill=colour,
                     outline=outline)
        return [x, top, s, height]
    if category == 5:  # cross: two bars a third of the side wide
        bar = max(2, s // 3)
        lo = (s - bar) // 2
        draw.rectangle([x + lo, y, x + lo + bar - 1, y + s - 1], fill=colour)
        draw.rectangle([x, y + lo, x + s - 1, y + lo + bar - 1], fill=colour)
        return [x, y, s, s]
    if category == 6:  # ring: the background shows through its hole
        draw.ellipse([x, y, x + s - 1, y + s - 1], outline=colour, width=max(2, s // 5))
        return [x, y, s, s]
    points = {4: lambda: _regular_polygon(x, y, s, 4), 7: lambda: _regular_polygon(x, y, s, 6, turn=math.pi / 6),
              8: lambda: _regular_polygon(x, y, s, 10, inner=0.45)}[category]()
    draw.polygon(points, fill=colour, outline=outline)
    return _tight(points)


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, imgsz: int, count: int) -> None:
    """`count` unlabelled marks: strokes (polylines) and irregular blobs, in colours as saturated as the shapes'."""
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            points = [tuple(float(v) for v in rng.uniform(0, imgsz, 2)) for _ in range(int(rng.integers(2, 5)))]
            draw.line(points, fill=colour, width=int(rng.integers(1, max(2, imgsz // 40) + 1)))
        else:
            cx, cy = rng.uniform(0, imgsz, 2)
            radius = rng.uniform(0.02, 0.08) * imgsz
            corners = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
            radii = radius * rng.uniform(0.4, 1.0, corners)
            draw.polygon([(float(cx + r * math.cos(a)), float(cy + r * math.sin(a))) for a, r in zip(angles, radii)],
                         fill=colour)


def make_split(out: Path, count: int, imgsz: int, rng: np.random.Generator, first_id: int = 1, classes: int = 3,
               max_objects: int = 6, sizes: tuple[float, float] = (0.06, 0.45), clutter: int = 0) -> dict:
    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be 1..{len(SHAPES)}, got {classes}")
    if not 0 < sizes[0] <= sizes[1] < 1:
        raise ValueError(f"sizes must be 0 < low <= high < 1 (fractions of the side), got {list(sizes)}")
    out.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES[:classes])]
    coco = {"info": {"description": "detrzoo demo shapes"}, "images": [], "annotations": [], "categories": categories}
    for k in range(count):
        image_id = first_id + k
        image = _background(rng, imgsz)
        draw = ImageDraw.Draw(image)
        if clutter:
            _draw_clutter(draw, rng, imgsz, clutter)
        n_objects = 0 if rng.random() < 0.125 else int(rng.integers(1, max_objects + 1))
        placed = []
        for _ in range(n_objects * 10):  # rejection sampling against heavy overlap
            if len(placed) == n_objects:
                break
            s = int(rng.uniform(*sizes) * imgsz)
            x, y = int(rng.integers(0, imgsz - s)), int(rng.integers(0, imgsz - s))
            if all(_overlap((x, y, s, s), p[1]) < 0.25 for p in placed):
                placed.append((int(rng.integers(1, classes + 1)), (x, y, s, s)))
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


def make_demo(out, train: int = 64, val: int = 16, imgsz: int = 256, seed: int = 0, classes: int = 3,
              max_objects: int = 6, sizes: tuple[float, float] = (0.06, 0.45), clutter: int = 0) -> dict[str, Path]:
    """Write the demo dataset; returns {split: annotation file}. The options make it harder (module docstring)."""
    out, rng = Path(out), np.random.default_rng(seed)
    options = {"classes": classes, "max_objects": max_objects, "sizes": tuple(sizes), "clutter": clutter}
    make_split(out / "train", train, imgsz, rng, first_id=1, **options)
    make_split(out / "val", val, imgsz, rng, first_id=100001, **options)
    return {split: out / split / "_annotations.coco.json" for split in ("train", "val")}


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Refuse what would fail midway (a traceback after some files are written) or write a useless set."""
    low = {"train": 1, "val": 1, "imgsz": 32, "max_objects": 1, "clutter": 0}
    for name, least in low.items():
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    if not 1 <= args.classes <= len(SHAPES):
        parser.error(f"--classes must be 1..{len(SHAPES)} ({', '.join(SHAPES)}), got {args.classes}")
    if not 0 < args.sizes[0] <= args.sizes[1] < 1:
        parser.error(f"--sizes must be 0 < LOW <= HIGH < 1 (fractions of the image side), got {list(args.sizes)}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file; give a folder (it is created if missing)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=64, help="training images")
    parser.add_argument("--val", type=int, default=16, help="validation images")
    parser.add_argument("--imgsz", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=3, help=f"1..{len(SHAPES)}: {', '.join(SHAPES)}")
    parser.add_argument("--max-objects", type=int, default=6, help="at most this many shapes per image")
    parser.add_argument("--sizes", type=float, nargs=2, default=(0.06, 0.45), metavar=("LOW", "HIGH"),
                        help="shape side as a fraction of the image side")
    parser.add_argument("--clutter", type=int, default=0, help="unlabelled marks per image")
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    files = make_demo(args.out, args.train, args.val, args.imgsz, args.seed, args.classes, args.max_objects,
                      tuple(args.sizes), args.clutter)
    for split, path in files.items():
        coco = json.loads(path.read_text())
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {path}")


if __name__ == "__main__":
    main()
