"""Ultralytics YOLO layouts read as COCO: `data.yaml` (`path`, `train`/`val`/`test`, `names`), images in
`.../images/`, one `.../labels/NAME.txt` per image with lines `class cx cy w h` (normalised).

`yolo_to_coco(data_yaml, split)` builds the COCO dict (category ids = YOLO class ids, 0-based, with
their names; boxes in pixels); `YoloDetection` trains on it directly, `data.yolo2coco` writes it out.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import PositiveInt

from core.errors import DataError
from core.yaml_io import load_yaml
from data.coco import CocoDetection
from data.validate import TooLarge, read_image_size

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_data_yaml(data_yaml) -> dict:
    """The data.yaml as a dict whose `names` is {class id: name}: a list gives ids 0..n-1, a mapping keeps
    its own keys (1-based or gapped ids are what the label files use, so they are never renumbered)."""
    spec = load_yaml(data_yaml, error=DataError)
    if not isinstance(spec, dict):
        raise DataError(f"data.yaml must be a mapping (path, train, val, names), got {type(spec).__name__}",
                        where=str(data_yaml))
    names = spec.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    elif isinstance(names, dict):
        bad = [k for k in names if isinstance(k, bool) or not isinstance(k, int) or k < 0]
        if bad:
            raise DataError(f"`names` keys must be the class ids of the label files (integers >= 0), got {bad}",
                            where=f"{data_yaml}: names", hint="write `names: {0: cat, 1: dog}` or `names: [cat, dog]`")
    elif names is not None:
        raise DataError(f"`names` must be a list or a mapping of class names, got {type(names).__name__} {names!r}",
                        where=f"{data_yaml}: names", hint="write `names: [cat]` for one class, or `names: {0: cat}`")
    if not names:
        raise DataError("no `names` (class names) in data.yaml", where=str(data_yaml),
                        hint="add `names: [cat, dog, ...]` or `names: {0: cat, 1: dog}`")
    if "nc" in spec and spec["nc"] != len(names):
        raise DataError(f"nc is {spec['nc']} but names lists {len(names)} classes", where=str(data_yaml),
                        hint="make nc equal the number of names, or drop nc")
    spec["names"] = {int(k): str(v) for k, v in sorted(names.items())}
    return spec


def split_root(data_yaml: Path, spec: dict) -> Path:
    root = Path(spec.get("path") or ".")
    return root if root.is_absolute() else (data_yaml.parent / root).resolve()


def split_images(data_yaml, split: str) -> list[Path]:
    """Image files of one split: a folder, a list of folders, or a .txt list of image paths."""
    data_yaml = Path(data_yaml)
    spec = load_data_yaml(data_yaml)
    if split not in spec or spec[split] is None:
        raise DataError(f"no `{split}` entry", where=str(data_yaml), hint="add e.g. `val: valid/images`")
    root = split_root(data_yaml, spec)
    images = []
    for entry in spec[split] if isinstance(spec[split], list) else [spec[split]]:
        # Roboflow writes `../train/images` next to a data.yaml that sits beside `train/`
        candidates = [root / entry, data_yaml.parent / entry, data_yaml.parent / str(entry).removeprefix("../")]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise DataError(f"`{split}: {entry}` not found", where=str(data_yaml),
                            hint="tried " + ", ".join(str(c) for c in candidates))
        if found.is_dir():
            images += sorted(p for p in found.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            images += [(found.parent / line.strip()).resolve() for line in found.read_text().splitlines() if line.strip()]
    return images


def label_path(image: Path) -> Path:
    """Ultralytics rule: the last `images` folder in the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    if "images" in parts:
        parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
    return Path(*parts).with_suffix(".txt")


COORD_SLACK = 0.01  # exporters round 1.0 to 1.0001 and the like; the dataset clamps such boxes


def read_labels(path: Path, names: dict) -> list[tuple[int, float, float, float, float]]:
    """Rows (class, cx, cy, w, h) of one label file; a missing file is an image without objects."""
    if not path.is_file():
        return []
    rows = []
    # utf-8-sig: label files written by Windows tools may start with a byte-order mark
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            raise DataError(f"expected 5 columns `class cx cy w h`, found {len(fields)}: {line.strip()!r}", where=where,
                            hint="detection labels only; convert segmentation polygons to boxes first")
        try:
            cls, values = float(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise DataError(f"not numbers: {line.strip()!r}", where=where) from None
        if not cls.is_integer():
            raise DataError(f"class {fields[0]} is not a whole number", where=where, hint="class ids are 0, 1, 2, ...")
        cls = int(cls)
        if cls not in names:
            raise DataError(f"class {cls} is not in data.yaml's names (ids {sorted(names)})", where=where,
                            hint="fix the label, or add the class to `names`")
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"non-finite coordinates: {line.strip()!r}", where=where)
        if not all(-COORD_SLACK <= v <= 1 + COORD_SLACK for v in values):
            raise DataError(f"coordinates outside 0..1: {line.strip()!r}", where=where,
                            hint="YOLO labels give cx, cy, w, h as fractions of the image width and height; "
                                 "pixel values must be divided by the image size")
        rows.append((cls, *values))
    return rows


def yolo_to_coco(data_yaml, split: str = "train", workers: int = 8) -> tuple[dict, list[Path]]:
    """(COCO dict, image paths) for one split; `file_name`s are the image paths (absolute)."""
    spec = load_data_yaml(data_yaml)
    names, images = spec["names"], split_images(data_yaml, split)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        sizes = list(pool.map(read_image_size, images))
    unreadable = [str(p) for p, s in zip(images, sizes) if s is None]
    if unreadable:
        raise DataError(f"{len(unreadable)} unreadable images: {', '.join(unreadable[:10])}", where=str(data_yaml),
                        hint="re-export or remove these images")
    too_large = [(p, s) for p, s in zip(images, sizes) if isinstance(s, TooLarge)]
    if too_large:
        raise DataError(f"{len(too_large)} images above PIL's pixel limit, e.g. {too_large[0][0]}: "
                        f"{too_large[0][1].split(',')[0]}", where=str(data_yaml),
                        hint="downscale them, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the files")
    labels = [label_path(p) for p in images]
    if images and not any(p.is_file() for p in labels):
        raise DataError(f"none of the {len(images)} `{split}` images has a label file (looked for e.g. {labels[0]})",
                        where=str(data_yaml), hint="labels live in a `labels/` folder beside `images/`, one NAME.txt "
                                                   "per image; an image without objects may simply have no file")
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i, "name": n, "supercategory": "none"} for i, n in names.items()]}
    for image_id, (path, label, (w, h)) in enumerate(zip(images, labels, sizes)):
        coco["images"].append({"id": image_id, "file_name": str(path), "width": w, "height": h})
        for cls, cx, cy, bw, bh in read_labels(label, names):
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": cls,
                                        "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return coco, images


class YoloDetection(CocoDetection):
    """Train directly from a YOLO data.yaml (`dataset: {type: yolo, data_yaml: F, split: train}`)."""

    def __init__(self, data_yaml: str, split: str = "train", transforms=None, num_classes: int | None = None,
                 ram_cache: bool = False, cache_imgsz: PositiveInt = 640, verbose: bool = True):
        coco, _ = yolo_to_coco(data_yaml, split)
        # file_names are absolute paths, which a folder join leaves as they are; every image header
        # was just read, so the images are not validated again
        super().__init__(img_folder="/", ann_file=f"{data_yaml}[{split}]", transforms=transforms,
                         num_classes=num_classes, ram_cache=ram_cache, cache_imgsz=cache_imgsz, validate=False,
                         dataset_dict=coco, verbose=verbose)
