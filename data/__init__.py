"""Data: COCO and YOLO datasets, transforms and augmentation policy, batching, demo data.

Batches are `(images [B,3,H,W] float, targets)`; each target has `boxes` (cxcywh normalised to the
network input), `labels` (contiguous int64 in [0, nc)), `image_id`, `orig_size` ([w, h] of the
original image), `size` ([w, h] of the network input), `area` (box area in input pixels),
`iscrowd`, and from Resize `scale`/`pad` (to map boxes back, see transforms.restore_boxes).
Datasets carry `num_classes`, `names`, `category_ids` (label -> original id) and `coco` (pycocotools,
original ids) for evaluation.
"""
from __future__ import annotations

import torch
import torch.utils.data

from data.coco import CocoDetection, check_num_classes
from data.collate import BatchImageCollateFunction
from data.config import apply_epochs, apply_imgsz, derive_epochs
from core.errors import DataError
from data.pipeline import Compose
from data.transforms import preprocess_image, restore_boxes
from data.yolo import YoloDetection
from core.errors import ConfigError

__all__ = ["build_dataset", "build_dataloader", "set_epoch", "CocoDetection", "YoloDetection", "Compose",
           "BatchImageCollateFunction", "DataError", "check_num_classes", "derive_epochs", "apply_epochs",
           "apply_imgsz", "preprocess_image", "restore_boxes"]

DATASETS = {"coco": CocoDetection, "CocoDetection": CocoDetection, "yolo": YoloDetection, "YoloDetection": YoloDetection}
COLLATES = {"BatchImageCollateFunction": BatchImageCollateFunction}
# keys of the official configs that have no effect here
IGNORED_DATASET_KEYS = ("return_masks",)


def build_dataset(cfg: dict, split: str = "train", verbose: bool = True):
    """The dataset of a dataloader section (`train_dataloader` / `val_dataloader`), transforms included."""
    where = f"{split}_dataloader.dataset"
    spec = dict(cfg.get("dataset") or {})
    kind = spec.pop("type", "coco")
    if kind not in DATASETS:
        raise ConfigError(f"unknown dataset type {kind!r}", where=f"{where}.type", hint="use coco or yolo")
    transforms = spec.pop("transforms", None)
    if transforms is not None and cfg.get("transforms") is not None:
        raise ConfigError("transforms given twice", where=where, hint="keep only dataset.transforms")
    transforms = transforms if transforms is not None else cfg.get("transforms")
    for key in IGNORED_DATASET_KEYS:
        spec.pop(key, None)
    if transforms is not None:
        transforms = Compose(**{k: v for k, v in transforms.items() if k != "type"}, where=f"{where}.transforms")
    for key in ("ram_cache", "cache_imgsz"):
        if key in cfg and key not in spec:
            spec[key] = cfg[key]
    try:
        return DATASETS[kind](transforms=transforms, verbose=verbose, **spec)
    except TypeError as err:
        raise ConfigError(f"bad dataset arguments: {err}", where=where) from None


def build_collate(cfg: dict | None, split: str):
    spec = dict(cfg or {})
    kind = spec.pop("type", "BatchImageCollateFunction")
    if kind not in COLLATES:
        raise ConfigError(f"unknown collate_fn {kind!r}", where=f"{split}_dataloader.collate_fn.type")
    try:
        return COLLATES[kind](**spec)
    except TypeError as err:
        raise ConfigError(f"bad collate_fn arguments: {err}", where=f"{split}_dataloader.collate_fn") from None


def build_dataloader(cfg: dict, split: str = "train", distributed: bool = False, seed: int = 0,
                     dataset=None, verbose: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader for a dataloader section. `batch_size` is per process; `total_batch_size`
    (the official key) is divided by the world size."""
    dataset = dataset if dataset is not None else build_dataset(cfg, split, verbose)
    world = torch.distributed.get_world_size() if distributed else 1
    if cfg.get("batch_size") is not None:
        batch_size = cfg["batch_size"]
    elif cfg.get("total_batch_size") is not None:
        if cfg["total_batch_size"] % world:
            raise ConfigError(f"total_batch_size {cfg['total_batch_size']} is not divisible by {world} processes",
                              where=f"{split}_dataloader.total_batch_size")
        batch_size = cfg["total_batch_size"] // world
    else:
        batch_size = 1
    shuffle = cfg.get("shuffle", split == "train")
    workers = cfg.get("num_workers", 0)
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed) if distributed else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=workers, collate_fn=build_collate(cfg.get("collate_fn"), split),
        drop_last=cfg.get("drop_last", split == "train"),
        pin_memory=cfg.get("pin_memory", torch.cuda.is_available()),
        persistent_workers=cfg.get("persistent_workers", workers > 0) and workers > 0,
        generator=generator)


def set_epoch(loader, epoch: int) -> None:
    """Drive the augmentation policy (dataset and collate) and the distributed shuffle for `epoch`."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.collate_fn, "set_epoch"):
        loader.collate_fn.set_epoch(epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
