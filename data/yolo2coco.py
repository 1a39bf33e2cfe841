"""Convert an Ultralytics YOLO dataset to COCO, one folder per split:
`DST/<split>/` holds the images and `_annotations.coco.json` (class ids stay 0-based, names kept).

    python -m data.yolo2coco --src DIR_OR_DATA_YAML --dst DIR [--splits train val test] [--link]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from core.errors import DataError
from data.yolo import load_data_yaml, yolo_to_coco
from core.errors import cli_main


def find_data_yaml(src: Path) -> Path:
    if src.is_file():
        return src
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (src / name).is_file():
            return src / name
    raise DataError("no data.yaml found", where=str(src), hint="pass the data.yaml itself as --src")


def convert(src, dst, splits=None, link: bool = False) -> dict[str, Path]:
    """Write DST/<split>/_annotations.coco.json (+ images); returns {split: json path}."""
    data_yaml, dst = find_data_yaml(Path(src)), Path(dst)
    spec = load_data_yaml(data_yaml)
    written = {}
    for split in splits or [s for s in ("train", "val", "test") if spec.get(s)]:
        coco, images = yolo_to_coco(data_yaml, split)
        out = dst / split
        out.mkdir(parents=True, exist_ok=True)
        used = set()
        for entry, path in zip(coco["images"], images):
            name = path.name if path.name not in used else f"{entry['id']}_{path.name}"
            used.add(name)
            entry["file_name"] = name
            if (out / name).exists():
                (out / name).unlink()
            if link:
                os.symlink(path.resolve(), out / name)
            else:
                shutil.copy2(path, out / name)
        (out / "_annotations.coco.json").write_text(json.dumps(coco))
        written[split] = out / "_annotations.coco.json"
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {written[split]}")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="YOLO dataset folder (with data.yaml) or the data.yaml")
    parser.add_argument("--dst", required=True, help="output folder")
    parser.add_argument("--splits", nargs="*", help="splits to convert (default: those in data.yaml)")
    parser.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    convert(args.src, args.dst, args.splits, args.link)


if __name__ == "__main__":
    cli_main(main)
