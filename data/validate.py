"""One pass over a COCO annotation dict that finds, repairs or reports every problem before training.

Repairs (counted, reported as warnings): boxes reaching outside the image are clamped; boxes with
zero/negative size or NaN coordinates, and annotations of images that do not exist, are dropped;
missing `area`, `iscrowd`, annotation `id` and image `width`/`height` are filled in.
Errors (the run stops): missing or unreadable image files, duplicate image or annotation ids, one file
under two image ids, an image file of another size than its entry (resized after labelling: the boxes
are in the entry's pixels; width and height swapped, a rotation, is only a warning), annotations of
unknown categories, malformed entries. Image files are checked from their headers only.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from core.errors import DataError

ERROR_KINDS = {
    "image_missing": "image file not found",
    "image_unreadable": "image file cannot be read",
    "image_too_large": "image above PIL's pixel limit (a decompression-bomb guard)",
    "image_bad_entry": "image entry without an integer `id` or a `file_name`",
    "duplicate_image_id": "two images share an id",
    # each id would get its own share of the file's boxes and predictions for all of them: false positives
    "duplicate_file_name": "two image ids name the same file",
    "duplicate_annotation_id": "two annotations share an id",
    "duplicate_category_id": "two categories share an id",
    "unknown_category": "annotation of a category missing from `categories`",
    # the boxes are in the annotation file's pixels: an image resized after labelling gets wrong boxes
    "size_differs": "image file size differs from width/height in the annotation file",
    "bad_annotation": "annotation without a 4-number `bbox`",
    "no_categories": "no `categories` list",
}
WARNING_KINDS = {
    "box_clamped": "box reaches outside the image (clamped)",
    "box_degenerate": "box with zero or negative width/height (dropped)",
    "box_nan": "box with NaN/inf coordinates (dropped)",
    "unknown_image": "annotation of an image missing from `images` (dropped)",
    "size_mismatch": "image file's width and height are the annotation file's swapped (rotated)",
    "size_filled": "image without width/height (read from the file)",
    "id_filled": "annotation without an id (assigned)",
    "duplicate_category_name": "two categories share a name (labels stay apart; names in results do not)",
}
ORIENTATION_TAG = 0x0112
# Exporters write coordinates like 640.0000001; smaller overshoots are clamped without a report.
CLAMP_TOLERANCE = 1e-2


@dataclass
class Problem:
    kind: str
    image_id: object = None
    file_name: str | None = None
    ann_id: object = None
    detail: str = ""

    @property
    def severity(self) -> str:
        return "error" if self.kind in ERROR_KINDS else "warning"

    def __str__(self) -> str:
        ids = [f"{k}={v}" for k, v in (("image_id", self.image_id), ("file", self.file_name), ("ann_id", self.ann_id))
               if v is not None]
        return f"{self.kind}: {', '.join(ids)}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Report:
    """Problems found in one annotation file, and the repaired dataset dict (`dataset`)."""

    ann_file: str
    dataset: dict
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def by_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def summary(self, per_kind: int = 5) -> str:
        """Counts per kind, and the first few problems of each kind with their ids."""
        if not self.problems:
            return f"{self.ann_file}: {len(self.dataset['images'])} images, {len(self.dataset['annotations'])} boxes, no problems"
        lines = [f"{self.ann_file}: {len(self.errors)} errors, {len(self.warnings)} warnings"]
        for kind, count in sorted(self.counts.items(), key=lambda kv: (kv[0] not in ERROR_KINDS, kv[0])):
            text = ERROR_KINDS.get(kind) or WARNING_KINDS[kind]
            lines.append(f"  [{'error' if kind in ERROR_KINDS else 'warning'}] {kind} x{count}: {text}")
            lines += [f"      {p}" for p in self.by_kind(kind)[:per_kind]]
            if count > per_kind:
                lines.append(f"      ... and {count - per_kind} more")
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DataError(f"the dataset has errors that would make training wrong\n{self.summary()}",
                            where=self.ann_file,
                            hint="fix the annotation file or the image folder; warnings are repaired automatically")


def load_json(ann_file: str | Path) -> dict:
    try:
        with open(ann_file, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("annotation file not found", where=str(ann_file),
                        hint="check `ann_file` in the dataset config") from None
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err}", where=str(ann_file),
                        hint="is this the annotation file? re-export it as COCO JSON") from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})", where=str(ann_file),
                        hint="a COCO file is UTF-8 JSON; is this an image or an archive?") from None
    except RecursionError:
        raise DataError("JSON nested too deeply to read", where=str(ann_file),
                        hint="a COCO file nests three levels; is this the annotation file?") from None
    except IsADirectoryError:
        raise DataError("is a folder, not an annotation file", where=str(ann_file),
                        hint="point `ann_file` at the .json inside it") from None


class TooLarge(str):
    """read_image_size's answer for an image PIL refuses to open: the reason, as PIL gives it."""


def read_image_size(path: Path) -> tuple[int, int] | TooLarge | None:
    """(width, height) from the file header without decoding pixels; None when unreadable, TooLarge
    (PIL's message) when its pixel count exceeds PIL's decompression-bomb limit."""
    try:
        with Image.open(path) as im:
            # EXIF orientations 5-8 turn the image a quarter: it is loaded (and annotated) upright
            return im.size[::-1] if im.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8) else im.size
    except Image.DecompressionBombError as err:
        return TooLarge(str(err))
    except (OSError, ValueError):
        return None


def check_structure(raw, name: str) -> None:
    """The COCO layout itself: a mapping whose `images`, `annotations` and `categories` are lists of
    mappings. Anything else (a list at the top, `images: {...}`, strings as entries) stops here, named."""
    if not isinstance(raw, dict):
        raise DataError(f"a COCO annotation file is a mapping with images/annotations/categories, got a "
                        f"{type(raw).__name__}", where=name, hint="is this a COCO detection file? (predictions "
                                                               "files are lists; pass the annotation file)")
    for key in ("images", "annotations", "categories"):
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise DataError(f"`{key}` must be a list, got {type(value).__name__}", where=f"{name}: {key}",
                            hint="re-export the annotations in COCO format")
        bad = next((i for i, entry in enumerate(value) if not isinstance(entry, dict)), None)
        if bad is not None:
            raise DataError(f"`{key}[{bad}]` must be a mapping, got {type(value[bad]).__name__} {value[bad]!r:.60}",
                            where=f"{name}: {key}[{bad}]", hint="re-export the annotations in COCO format")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_coco(ann_file: str | Path | dict, img_folder: str | Path | None = None,
                  check_images: bool = True, workers: int = 8, name: str | None = None) -> Report:
    """Check a COCO annotation file (or an already-loaded dict, reported as `name`) against its image
    folder. Returns a Report whose `dataset` is the repaired dict; `report.raise_for_errors()` stops the run."""
    raw = ann_file if isinstance(ann_file, dict) else load_json(ann_file)
    name = name or ("<dict>" if isinstance(ann_file, dict) else str(ann_file))
    check_structure(raw, name)
    problems: list[Problem] = []

    categories = raw.get("categories")
    if not categories:
        problems.append(Problem("no_categories", detail="add `categories: [{id, name}, ...]`"))
        categories = []
    cat_ids, cat_names = set(), {}
    for cat in categories:
        if cat.get("id") in cat_ids:
            problems.append(Problem("duplicate_category_id", detail=f"category id {cat.get('id')!r}"))
        if cat.get("name") in cat_names:
            problems.append(Problem("duplicate_category_name", detail=f"{cat.get('name')!r}: category ids "
                                    f"{cat_names[cat.get('name')]!r} and {cat.get('id')!r}"))
        cat_ids.add(cat.get("id"))
        cat_names.setdefault(cat.get("name"), cat.get("id"))

    images, seen_ids, seen_files = [], {}, {}
    for entry in raw.get("images", []):
        image_id, file_name = entry.get("id"), entry.get("file_name")
        if not isinstance(image_id, int) or isinstance(image_id, bool) or not file_name:
            problems.append(Problem("image_bad_entry", image_id, file_name, detail=json.dumps(entry)[:120]))
            continue
        if image_id in seen_ids:
            problems.append(Problem("duplicate_image_id", image_id, file_name,
                                    detail=f"also used by {seen_ids[image_id]}"))
            continue
        if file_name in seen_files:
            problems.append(Problem("duplicate_file_name", image_id, file_name,
                                    detail=f"also image id {seen_files[file_name]}"))
            continue
        seen_ids[image_id], seen_files[file_name] = file_name, image_id
        images.append(dict(entry))

    if check_images or any(not (_is_number(im.get("width")) and _is_number(im.get("height"))) for im in images):
        _check_image_files(images, img_folder, check_images, workers, problems)

    by_id = {im["id"]: im for im in images}
    annotations, ann_ids = [], set()
    used = {a["id"] for a in raw.get("annotations", []) if isinstance(a.get("id"), int)}
    next_id = max(used, default=0) + 1
    for ann in raw.get("annotations", []):
        ann = dict(ann)
        image = by_id.get(ann.get("image_id"))
        file_name = image["file_name"] if image else None
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
            problems.append(Problem("id_filled", ann.get("image_id"), file_name, ann["id"]))
        elif ann["id"] in ann_ids:
            problems.append(Problem("duplicate_annotation_id", ann.get("image_id"), file_name, ann["id"]))
            continue
        ann_ids.add(ann["id"])
        pid = (ann.get("image_id"), file_name, ann["id"])
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.append(Problem("bad_annotation", *pid, detail=f"bbox={bbox!r}"))
            continue
        if ann.get("category_id") not in cat_ids:
            problems.append(Problem("unknown_category", *pid, detail=f"category_id={ann.get('category_id')!r}"))
            continue
        if image is None:
            problems.append(Problem("unknown_image", *pid))
            continue
        if not all(math.isfinite(v) for v in bbox):
            problems.append(Problem("box_nan", *pid, detail=f"bbox={bbox}"))
            continue
        x, y, w, h = map(float, bbox)
        if w <= 0 or h <= 0:
            problems.append(Problem("box_degenerate", *pid, detail=f"bbox={bbox}"))
            continue
        width, height = image.get("width"), image.get("height")
        if _is_number(width) and _is_number(height):
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if max(abs(x1 - x), abs(y1 - y), abs(x2 - x - w), abs(y2 - y - h)) > CLAMP_TOLERANCE:
                problems.append(Problem("box_clamped", *pid, detail=f"bbox={bbox} in {width}x{height}"))
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                problems.append(Problem("box_degenerate", *pid, detail=f"bbox={bbox} lies outside {width}x{height}"))
                continue
            x, y, w, h = x1, y1, x2 - x1, y2 - y1
        ann["bbox"] = [x, y, w, h]
        if not _is_number(ann.get("area")) or not math.isfinite(ann["area"]) or ann["area"] <= 0:
            ann["area"] = w * h
        ann.setdefault("iscrowd", 0)
        annotations.append(ann)

    dataset = {k: v for k, v in raw.items() if k not in ("images", "annotations", "categories")}
    dataset.update(images=images, annotations=annotations, categories=[dict(c) for c in categories])
    return Report(name, dataset, problems)


def _check_image_files(images: list[dict], img_folder, check_images: bool, workers: int,
                       problems: list[Problem]) -> None:
    """Read every image header (threads: the work is file I/O); fill or compare width/height."""
    if img_folder is None:
        raise DataError("image sizes are needed but no image folder was given", hint="pass `img_folder`")
    folder = Path(img_folder)
    todo = [im for im in images if check_images or not (_is_number(im.get("width")) and _is_number(im.get("height")))]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        sizes = list(pool.map(lambda im: read_image_size(folder / im["file_name"]), todo))
    for im, size in zip(todo, sizes):
        if isinstance(size, TooLarge):
            problems.append(Problem("image_too_large", im["id"], im["file_name"],
                                    detail=f"{size.split(',')[0]}; downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS "
                                           "if you trust the file"))
        elif size is None:
            kind = "image_missing" if not (folder / im["file_name"]).is_file() else "image_unreadable"
            problems.append(Problem(kind, im["id"], im["file_name"], detail=str(folder / im["file_name"])))
        elif not (_is_number(im.get("width")) and _is_number(im.get("height"))):
            im["width"], im["height"] = size
            problems.append(Problem("size_filled", im["id"], im["file_name"], detail=f"{size[0]}x{size[1]}"))
        elif tuple(size) != (im["width"], im["height"]):
            kind = "size_mismatch" if tuple(size) == (im["height"], im["width"]) else "size_differs"
            problems.append(Problem(kind, im["id"], im["file_name"],
                                    detail=f"file {size[0]}x{size[1]}, json {im['width']}x{im['height']}"))
