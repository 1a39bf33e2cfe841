"""Convert an Ultralytics YOLO dataset to COCO, one folder per split:
`DST/<split>/` holds the images and `_annotations.coco.json` (class ids and names kept).

    python -m data.yolo2coco --src DIR_OR_DATA_YAML --dst DIR [--splits train val test] [--link]
                             [--imgsz W H [--letterbox]]

`--imgsz W H` writes every image resized to W x H (stretched, or with `--letterbox` scaled to fit and
padded with grey), with its boxes mapped the same way, as the RT-DETRv4 guide's converter does. The
destination may not be inside (or equal to) the source dataset, nor contain it: a converter must
never overwrite the images it reads.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from core.checkpoint_io import atomic_write_text
from core.errors import ConfigError, DataError, cli_main
from data.cache import load_rgb
from data.transforms import resize_image
from data.yolo import load_data_yaml, yolo_to_coco


def find_data_yaml(src: Path) -> Path:
    if src.is_file():
        return src
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (src / name).is_file():
            return src / name
    raise DataError("no data.yaml found", where=str(src), hint="pass the data.yaml itself as --src")


def check_destination(dst: Path, sources: list[Path]) -> None:
    """Refuse a destination inside, equal to, or around any folder the conversion reads."""
    dst = dst.resolve()
    for source in sources:
        source = source.resolve()
        if dst == source or source in dst.parents or dst in source.parents:
            raise ConfigError(f"--dst {dst} {'is' if dst == source else 'overlaps'} the source {source}: writing "
                              "there could overwrite the images being converted", where="--dst",
                              hint="choose a folder outside the YOLO dataset, e.g. a sibling `DATASET_coco/`")


def _write_image(path: Path, target: Path, link: bool, size, letterbox: bool):
    """Copy, link or resize one image; returns (scale (sx, sy), pad (left, top)) for its boxes."""
    if size is None:
        if link:
            os.symlink(path.resolve(), target)
        else:
            shutil.copy2(path, target)
        return (1.0, 1.0), (0.0, 0.0)
    resized, scale, pad = resize_image(load_rgb(path), (size[1], size[0]), letterbox, 114)
    resized.save(target, quality=95)
    return scale, pad


def convert(src, dst, splits=None, link: bool = False, imgsz=None, letterbox: bool = False) -> dict[str, Path]:
    """Write DST/<split>/_annotations.coco.json (+ images); returns {split: json path}.

    imgsz: (W, H) to resize every image to (boxes follow); None keeps the images as they are."""
    data_yaml, dst = find_data_yaml(Path(src)), Path(dst)
    spec = load_data_yaml(data_yaml)
    if imgsz is not None and (len(imgsz) != 2 or min(imgsz) <= 0):
        raise ConfigError(f"--imgsz takes W H (positive), got {imgsz}", where="--imgsz")
    if link and imgsz is not None:
        raise ConfigError("--link keeps the original files, --imgsz writes resized ones", where="--link/--imgsz",
                          hint="use one of the two")
    chosen = splits or [s for s in ("train", "val", "test") if spec.get(s)]
    converted = {split: yolo_to_coco(data_yaml, split) for split in chosen}
    folders = {data_yaml.parent} | {p.parent for _, images in converted.values() for p in images}
    check_destination(dst, sorted(folders))
    written = {}
    for split, (coco, images) in converted.items():
        out = dst / split
        out.mkdir(parents=True, exist_ok=True)
        used = set()
        by_image = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for entry, path in zip(coco["images"], images):
            name = path.name if path.name not in used else f"{entry['id']}_{path.name}"
            used.add(name)
            entry["file_name"] = name
            (out / name).unlink(missing_ok=True)  # outside the source (checked above): a previous conversion's
            (sx, sy), (left, top) = _write_image(path, out / name, link, imgsz, letterbox)
            if imgsz is not None:
                entry["width"], entry["height"] = imgsz
                for ann in by_image.get(entry["id"], []):
                    x, y, w, h = ann["bbox"]
                    ann["bbox"] = [x * sx + left, y * sy + top, w * sx, h * sy]
                    ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        atomic_write_text(out / "_annotations.coco.json", json.dumps(coco, ensure_ascii=False))
        written[split] = out / "_annotations.coco.json"
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {written[split]}")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="YOLO dataset folder (with data.yaml) or the data.yaml")
    parser.add_argument("--dst", required=True, help="output folder (outside the source dataset)")
    parser.add_argument("--splits", nargs="*", help="splits to convert (default: those in data.yaml)")
    parser.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    parser.add_argument("-s", "--imgsz", type=int, nargs=2, metavar=("W", "H"), help="resize every image to W x H")
    parser.add_argument("-k", "--letterbox", action="store_true", help="with --imgsz: keep the aspect ratio, pad")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.letterbox and args.imgsz is None:
        raise ConfigError("--letterbox needs --imgsz W H", where="--letterbox")
    convert(args.src, args.dst, args.splits, args.link, args.imgsz, args.letterbox)


if __name__ == "__main__":
    cli_main(main)
