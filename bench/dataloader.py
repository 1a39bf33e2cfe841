"""Training-loader throughput (images/s) on the demo data at 640 px with the full DEIMv2 policy:
Mosaic, photometric distortion, zoom-out, IoU crop, flip, resize, MixUp, CopyBlend, multi-scale.

    python -m bench.dataloader [--data DIR] [--imgsz 640] [--workers 0 2] [--epoch 4] [--batches 16]

Without --data, demo images are generated at --imgsz into a temporary folder first.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from core.errors import cli_main
import data
from data.demo import make_demo


def full_policy(root: Path, imgsz: int, workers: int, batch_size: int) -> dict:
    """The DEIMv2 train_dataloader (official deimv2.yml values) pointed at the demo data."""
    return {
        "dataset": {"type": "coco", "img_folder": str(root / "train"), "ann_file": str(root / "train/_annotations.coco.json"),
                    "transforms": {"ops": [
                        {"type": "Mosaic", "output_size": imgsz // 2, "rotation_range": 10, "translation_range": [0.1, 0.1],
                         "scaling_range": [0.5, 1.5], "probability": 1.0, "fill_value": 0, "use_cache": True,
                         "max_cached_images": 50, "random_pop": True},
                        {"type": "RandomPhotometricDistort", "p": 0.5}, {"type": "RandomZoomOut", "fill": 0},
                        {"type": "RandomIoUCrop", "p": 0.8}, {"type": "SanitizeBoundingBoxes", "min_size": 1},
                        {"type": "RandomHorizontalFlip"}, {"type": "Resize", "size": [imgsz, imgsz]},
                        {"type": "SanitizeBoundingBoxes", "min_size": 1}, {"type": "ConvertPILImage"},
                        {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}],
                        "policy": {"name": "stop_epoch", "epoch": [4, 29, 50],
                                   "ops": ["Mosaic", "RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop"]},
                        "mosaic_prob": 0.5}},
        "collate_fn": {"type": "BatchImageCollateFunction", "base_size": imgsz, "base_size_repeat": 3,
                       "mixup_prob": 0.5, "mixup_epochs": [4, 29], "stop_epoch": 50, "copyblend_prob": 0.5,
                       "copyblend_epochs": [4, 50], "area_threshold": 100, "num_objects": 3, "with_expand": True,
                       "expand_ratios": [0.1, 0.25]},
        "batch_size": batch_size, "num_workers": workers, "shuffle": True, "drop_last": True,
    }


def measure(cfg: dict, epoch: int, batches: int) -> float:
    loader = data.build_dataloader(cfg, "train", verbose=False)
    data.set_epoch(loader, epoch)
    images_seen, start, it = 0, None, iter(loader)
    for k in range(batches + 1):
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, _ = next(it)
        if k == 0:  # the first batch pays for worker start-up
            start = time.perf_counter()
            continue
        images_seen += len(images)
    return images_seen / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="demo dataset folder (generated when left out)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epoch", type=int, default=4, help="epoch to measure (4: mosaic, mixup, copyblend all on)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--images", type=int, default=64, help="demo training images to generate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        if not args.data:
            make_demo(root, train=args.images, val=1, imgsz=args.imgsz)
        print(f"demo data {root}, input {args.imgsz}, batch {args.batch}, epoch {args.epoch}, {args.batches} batches")
        for workers in args.workers:
            rate = measure(full_policy(root, args.imgsz, workers, args.batch), args.epoch, args.batches)
            print(f"num_workers={workers}: {rate:.1f} images/s")


if __name__ == "__main__":
    cli_main(main)
