"""COCO-format detection dataset.

Category ids of any kind (1-based, sparse, strings) map to contiguous labels 0..nc-1; the mapping
is kept in `category_ids` / `names` so predictions go back to the original ids. Images without
annotations are negatives; crowd boxes (`iscrowd: 1`) are left out of the training targets and kept
in `coco` for evaluation, as COCO does. `remap_mscoco_category: true` fixes the mapping to the 80
official COCO ids (what official checkpoints were trained with), whatever subset the file lists.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from pycocotools.coco import COCO
from pydantic import PositiveInt

from data.cache import RamCache, load_rgb
from core.errors import DataError
from data.pipeline import Compose
from data.transforms import clamp_xyxy, make_boxes
from data.validate import validate_coco

COCO80_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}


def category_mapping(categories: list[dict], remap_mscoco_category: bool = False, where: str = ""):
    """(category_ids, names): contiguous label i <-> original category id category_ids[i].

    Integer ids are sorted; other ids keep the file's order."""
    if remap_mscoco_category:
        unknown = [c["id"] for c in categories if c["id"] not in COCO80_NAMES]
        if unknown:
            raise DataError(f"remap_mscoco_category is on but categories {unknown} are not COCO-80 ids", where=where,
                            hint="turn remap_mscoco_category off for a custom dataset")
        return list(COCO80_NAMES), list(COCO80_NAMES.values())
    ids = [c["id"] for c in categories]
    if all(isinstance(i, int) for i in ids):
        categories = sorted(categories, key=lambda c: c["id"])
    return [c["id"] for c in categories], [str(c.get("name", c["id"])) for c in categories]


def merge_categories(datasets, where: str = "datasets") -> tuple[list, list[str]]:
    """(category_ids, names) covering every split: the union of their categories (sorted when the ids
    are integers). The same id under two names stops the run with both lists."""
    names: dict = {}
    for dataset in datasets:
        for category_id, name in zip(dataset.category_ids, dataset.names):
            if names.setdefault(category_id, name) != name:
                listing = "; ".join(f"{d.ann_file}: {dict(zip(d.category_ids, d.names))}" for d in datasets)
                raise DataError(f"category {category_id!r} is {names[category_id]!r} in one split and {name!r} in "
                                f"another ({listing})", where=where,
                                hint="give every split the same categories (ids and names), or set `classes:`")
    ids = list(names)
    if all(isinstance(i, int) for i in ids):
        ids.sort()
    return ids, [names[i] for i in ids]


def check_num_classes(dataset, num_classes: int | None, where: str = "num_classes") -> int:
    """The number of classes to train: the dataset's, or the user's when it matches."""
    if num_classes is None or num_classes == dataset.num_classes:
        return dataset.num_classes
    shown = ", ".join(f"{i}={n!r}" for i, n in zip(dataset.category_ids[:10], dataset.names[:10]))
    raise DataError(f"num_classes is {num_classes} but the dataset has {dataset.num_classes} categories ({shown}"
                    f"{', ...' if dataset.num_classes > 10 else ''})", where=where,
                    hint="remove num_classes (it comes from the dataset) or set it to the dataset's count")


def pycocotools_index(dataset_dict: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset_dict
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDetection(torch.utils.data.Dataset):
    """Items are (image, target) after `transforms`; see data/__init__.py for the target keys."""

    def __init__(self, img_folder, ann_file=None, transforms=None, remap_mscoco_category: bool = False,
                 num_classes: int | None = None, ram_cache: bool = False, cache_imgsz: PositiveInt = 640,
                 validate: bool = True, dataset_dict: dict | None = None, verbose: bool = True):
        self.img_folder, self.ann_file = Path(img_folder), ann_file
        source = dataset_dict if dataset_dict is not None else ann_file
        if source is None:
            raise DataError("a COCO dataset needs `ann_file`", hint="set dataset.ann_file in the config")
        self.report = validate_coco(source, self.img_folder, check_images=validate, name=str(ann_file))
        if verbose and self.report.problems:
            print(self.report.summary())
        self.report.raise_for_errors()
        self.coco = pycocotools_index(self.report.dataset)
        self.category_ids, self.names = category_mapping(self.coco.dataset["categories"], remap_mscoco_category,
                                                         where=str(ann_file))
        self.label_of = {cat: i for i, cat in enumerate(self.category_ids)}
        check_num_classes(self, num_classes, where=f"{ann_file}: num_classes")
        self.ids = [im["id"] for im in self.coco.dataset["images"]]
        self._boxes, self._labels = self._index_targets()
        self.transforms = transforms if transforms is None or callable(transforms) else Compose(**transforms)
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()  # seen by (persistent) workers
        self.cache = None
        if ram_cache:
            images = [self.coco.imgs[i] for i in self.ids]
            self.cache = RamCache([self.img_folder / im["file_name"] for im in images],
                                  [(im["width"], im["height"]) for im in images], cache_imgsz)
            self.cache.fill(log=print if verbose else (lambda *_: None))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def use_categories(self, category_ids: list, names: list[str], source: str = "the run") -> None:
        """Label i is now `category_ids[i]` (one mapping shared by every split and the checkpoint).

        Every category of this split must be in it under the same name."""
        own = dict(zip(self.category_ids, self.names))
        given = dict(zip(category_ids, names))
        unknown = [f"{i}={n!r}" for i, n in own.items() if i not in given]
        renamed = [f"{i}: {n!r} here, {given[i]!r} in {source}" for i, n in own.items() if i in given and given[i] != n]
        if unknown or renamed:
            raise DataError(f"this split's categories disagree with {source}: "
                            + "; ".join(([f"not in {source}: {', '.join(unknown)}"] if unknown else []) + renamed),
                            where=str(self.ann_file),
                            hint=f"{source} has {given}; give every split the same categories")
        self.category_ids, self.names = list(category_ids), [str(n) for n in names]
        self.label_of = {cat: i for i, cat in enumerate(self.category_ids)}
        self._boxes, self._labels = self._index_targets()

    def _index_targets(self):
        boxes, labels = [], []
        for image_id in self.ids:
            anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            boxes.append(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
            labels.append(np.array([self.label_of[a["category_id"]] for a in anns], dtype=np.int64))
        return boxes, labels

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def load_item(self, idx: int):
        """(PIL RGB image, target) before transforms: boxes xyxy in the loaded image's pixels."""
        info = self.coco.imgs[self.ids[idx]]
        image = self.cache.get(idx) if self.cache else load_rgb(self.img_folder / info["file_name"])
        w, h = image.size
        ow, oh = (info["width"], info["height"]) if self.cache else (w, h)
        boxes = torch.from_numpy(self._boxes[idx]) * torch.tensor([w / ow, h / oh, w / ow, h / oh])
        boxes = clamp_xyxy(boxes, w, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        target = {
            "boxes": make_boxes(boxes, (h, w)),
            "labels": torch.from_numpy(self._labels[idx])[keep],
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
            "image_id": torch.tensor(self.ids[idx], dtype=torch.int64),
            "orig_size": torch.tensor([ow, oh], dtype=torch.int64),
        }
        return image, target

    def __getitem__(self, idx: int):
        image, target = self.load_item(idx)
        if self.transforms is not None:
            image, target = self.transforms(image, target, self)
        if isinstance(image, torch.Tensor):
            target["size"] = torch.tensor([image.shape[-1], image.shape[-2]], dtype=torch.int64)
        if isinstance(target["boxes"], torch.Tensor):
            target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {self.num_classes} classes, "
                f"img_folder={str(self.img_folder)!r})")
