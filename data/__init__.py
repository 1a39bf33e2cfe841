"""Data: COCO and YOLO datasets, transforms and augmentation policy, batching, demo data.

Batches are `(images [B,3,H,W] float, targets)`; each target has `boxes` (cxcywh normalised to the
network input), `labels` (contiguous int64 in [0, nc)), `image_id`, `orig_size` ([w, h] of the
original image), `size` ([w, h] of the network input), `area` (box area in input pixels),
`iscrowd`, and from Resize `scale`/`pad` (to map boxes back, see transforms.restore_boxes).
Datasets carry `num_classes`, `names`, `category_ids` (label -> original id) and `coco` (pycocotools,
original ids) for evaluation.
"""
from __future__ import annotations

from data.coco import CocoDetection, check_num_classes
from data.collate import BatchImageCollateFunction
from core.errors import DataError
from data.pipeline import Compose
from data.transforms import preprocess_image, restore_boxes
from data.loader import build_dataloader, build_dataset, check_loader, set_epoch
from data.yolo import YoloDetection

__all__ = ["build_dataset", "build_dataloader", "set_epoch", "CocoDetection", "YoloDetection", "Compose",
           "BatchImageCollateFunction", "DataError", "check_loader", "check_num_classes", "preprocess_image",
           "restore_boxes"]
