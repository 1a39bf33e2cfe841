"""Dataset statistics of a COCO annotation file: classes (id, name), instances and images per class,
boxes per image, COCO small/medium/large counts, and histograms of box size and aspect ratio.

    python -m analyze.dataset ANN.json [--images DIR] [--plot OUT.png]

With --images the file is validated against the image folder first (missing files, bad boxes...).
The exit code is 1 when the report holds errors (the ones that would stop a training run), else 0.
"""
from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

import numpy as np

from data.coco import category_mapping
from data.validate import validate_coco
from core.drawing import plot_fonts
from core.text import fit
from core.errors import ConfigError, cli_main

SMALL, MEDIUM = 32 ** 2, 96 ** 2  # COCO area ranges


def dataset_stats(coco: dict) -> dict:
    """Per-class and per-image counts, and per-box relative sizes, of a (validated) COCO dict."""
    ids, names = category_mapping(coco["categories"])
    sizes = {im["id"]: (im.get("width"), im.get("height")) for im in coco["images"]}
    anns = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    instances = Counter(a["category_id"] for a in anns)
    images_with = {cat: len({a["image_id"] for a in anns if a["category_id"] == cat}) for cat in ids}
    per_image = Counter(a["image_id"] for a in anns)
    areas = np.array([a["area"] for a in anns], dtype=np.float64)
    rel_w, rel_h, aspect = [], [], []
    for a in anns:
        w, h = sizes.get(a["image_id"], (None, None))
        bw, bh = a["bbox"][2], a["bbox"][3]
        if w and h:
            rel_w.append(bw / w)
            rel_h.append(bh / h)
        aspect.append(bw / bh)
    return {
        "classes": [{"label": i, "id": cat, "name": name, "instances": instances.get(cat, 0),
                     "images": images_with[cat]} for i, (cat, name) in enumerate(zip(ids, names))],
        "images": len(coco["images"]),
        "negatives": sum(1 for im in coco["images"] if im["id"] not in per_image),
        "boxes": len(anns),
        "crowd": len(coco["annotations"]) - len(anns),
        "boxes_per_image": [per_image.get(im["id"], 0) for im in coco["images"]],
        "small": int((areas < SMALL).sum()), "medium": int(((areas >= SMALL) & (areas < MEDIUM)).sum()),
        "large": int((areas >= MEDIUM).sum()),
        "rel_w": rel_w, "rel_h": rel_h, "aspect": aspect,
    }


def format_stats(stats: dict) -> str:
    per_image = np.array(stats["boxes_per_image"] or [0])
    crowd = f", {stats['crowd']} crowd" if stats["crowd"] else ""
    lines = [f"{stats['images']} images ({stats['negatives']} without boxes), {stats['boxes']} boxes{crowd}",
             f"boxes per image: mean {per_image.mean():.2f}, median {np.median(per_image):.0f}, max {per_image.max()}",
             f"COCO areas: small {stats['small']}, medium {stats['medium']}, large {stats['large']}",
             "", f"{'label':>5} {'id':>8}  {'name':<24} {'instances':>9} {'images':>7}"]
    for c in stats["classes"]:
        lines.append(f"{c['label']:>5} {str(c['id']):>8}  {fit(c['name'], 24)} {c['instances']:>9} {c['images']:>7}")
    lines.append(f"{len(stats['classes'])} classes (num_classes = {len(stats['classes'])})")
    return "\n".join(lines)


@plot_fonts()
def plot_stats(stats: dict, out: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["name"] for c in stats["classes"]]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(title or "dataset")
    ax = axes[0, 0]
    ax.bar(range(len(names)), [c["instances"] for c in stats["classes"]], color="tab:blue")
    ax.set_title("instances per class")
    ax = axes[0, 1]
    ax.bar(range(len(names)), [c["images"] for c in stats["classes"]], color="tab:green")
    ax.set_title("images per class")
    for ax in axes[0, :2]:
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                      fontsize=8 if len(names) > 20 else 10)
    ax = axes[0, 2]
    counts = stats["boxes_per_image"] or [0]
    ax.hist(counts, bins=range(0, max(counts) + 2), color="tab:orange", align="left", rwidth=0.85)
    ax.set_title("boxes per image")
    ax.set_xlabel("boxes")
    ax = axes[1, 0]
    ax.bar(["small\n<32²", "medium\n32²-96²", "large\n>96²"], [stats["small"], stats["medium"], stats["large"]],
           color=["tab:red", "tab:purple", "tab:brown"])
    ax.set_title("COCO size ranges (pixels²)")
    ax = axes[1, 1]
    ax.hist([stats["rel_w"], stats["rel_h"]], bins=20, range=(0, 1), label=["width", "height"])
    ax.legend()
    ax.set_title("box size / image size")
    ax = axes[1, 2]
    aspect = [math.log2(a) for a in stats["aspect"] if a > 0]
    ax.hist(aspect, bins=24, range=(-4, 4), color="tab:cyan")
    ax.set_xticks([-4, -2, -1, 0, 1, 2, 4], ["1/16", "1/4", "1/2", "1", "2", "4", "16"])
    ax.set_title("aspect ratio w/h (log scale)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ann_file", help="COCO annotation JSON")
    parser.add_argument("--images", help="image folder: also check the image files")
    parser.add_argument("--plot", help="write the histograms to this PNG")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.plot:   # before the validation, which reads every image header
        plot = Path(args.plot)
        if plot.is_dir() or not plot.parent.is_dir():
            raise ConfigError(f"--plot {plot}: {'a folder' if plot.is_dir() else 'its folder does not exist'}",
                              where="--plot", hint="name a .png file in an existing folder")
    report = validate_coco(args.ann_file, args.images, check_images=args.images is not None)
    print(report.summary())
    stats = dataset_stats(report.dataset)
    print(format_stats(stats))
    if args.plot:
        plot_stats(stats, Path(args.plot), title="/".join(Path(args.ann_file).parts[-2:]))
        print(f"plot -> {args.plot}")
    if report.errors:
        print(f"{len(report.errors)} errors: a training run would stop on this dataset")
        raise SystemExit(1)
    return stats


if __name__ == "__main__":
    cli_main(main)
