"""Datasets, collates and loaders from a run config's `train_dataloader` / `val_dataloader` sections.

The section's keys and types are declared here (`LoaderConfig`); a dataset's, a collate's and each
transform's keys are their constructors' parameters (`core.schema.check_call`), so a typo or a wrong
type anywhere names the key, before anything is built.
"""
from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.utils.data
from pydantic import NonNegativeInt, PositiveInt, model_validator

from core.errors import ConfigError
from core.registry import Registry
from core.schema import Section, check_call, validate_section
from data.coco import CocoDetection
from data.collate import BatchImageCollateFunction
from data.pipeline import Compose, check_transforms
from data.yolo import YoloDetection

DATASETS = Registry("dataset type")
DATASETS.register(CocoDetection, aliases=("coco",))
DATASETS.register(YoloDetection, aliases=("yolo",))
COLLATES = Registry("collate_fn type")
COLLATES.register(BatchImageCollateFunction)
# constructor parameters a config may not set: the loader passes them
_DATASET_OWN = ("transforms", "verbose", "dataset_dict")


class LoaderConfig(Section):
    """A `*_dataloader` section (official keys; `type: DataLoader` accepted)."""
    type: Literal["DataLoader"] = "DataLoader"
    dataset: dict
    transforms: dict | None = None          # the official place is dataset.transforms; either one, not both
    collate_fn: dict | None = None
    total_batch_size: PositiveInt | None = None
    batch_size: PositiveInt | None = None   # per process; derived from total_batch_size
    num_workers: NonNegativeInt = 0
    shuffle: bool | None = None
    drop_last: bool | None = None
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    ram_cache: bool = False
    cache_imgsz: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_transforms(self):
        if self.transforms is not None and self.dataset.get("transforms") is not None:
            raise ConfigError("transforms given twice (dataset.transforms and transforms)", where="transforms",
                              hint="keep only dataset.transforms")
        return self


def drop_other_types_keys(dataset: dict, cls, where: str, say=print) -> dict:
    """A dataset section keeps only the keys of its own type. Sections merge key by key, so a data file
    that changes the type (a YOLO `data.yaml` over a recipe that includes COCO paths) leaves the other
    type's keys behind; keys that only another dataset type takes are dropped, with one line."""
    own = set(inspect.signature(cls).parameters)
    foreign = {key for _, other in DATASETS.items() if other is not cls for key in inspect.signature(other).parameters}
    dropped = [key for key in dataset if key in foreign - own]
    if dropped:
        say(f"{where}: type {dataset.get('type', 'coco')} takes no {', '.join(dropped)} (another dataset type's keys, "
            "left by an included file): dropped")
    return {key: value for key, value in dataset.items() if key not in dropped}


def check_loader(section, split: str) -> dict:
    """The validated section (defaults filled), its dataset, collate and transforms checked."""
    where = f"{split}_dataloader"
    cfg = validate_section(LoaderConfig, section, where).model_dump()
    dataset = dict(cfg["dataset"])
    kind = dataset.get("type", "coco")
    cls = DATASETS.get(kind, where=f"{where}.dataset.type")
    dataset = drop_other_types_keys(dataset, cls, f"{where}.dataset")
    dataset.pop("type", None)
    transforms = dataset.pop("transforms", None)
    if transforms is None:
        transforms = cfg.pop("transforms")
    cfg.pop("transforms", None)
    dataset.pop("return_masks", None)  # the official configs' segmentation switch: boxes only here
    dataset = check_call(cls, dataset, f"{where}.dataset", skip=_DATASET_OWN)
    cfg["dataset"] = {"type": kind, **dataset,
                      "transforms": check_transforms(transforms, f"{where}.dataset.transforms", split)}
    if cfg["collate_fn"] is not None:
        collate = dict(cfg["collate_fn"])
        COLLATES.get(collate.pop("type", "BatchImageCollateFunction"), where=f"{where}.collate_fn.type")
        check_call(BatchImageCollateFunction, collate, f"{where}.collate_fn")
    return cfg


def build_dataset(cfg: dict, split: str = "train", verbose: bool = True):
    """The dataset of a (checked) dataloader section, transforms included."""
    where = f"{split}_dataloader.dataset"
    spec = dict(cfg.get("dataset") or {})
    cls = DATASETS.get(spec.pop("type", "coco"), where=f"{where}.type")
    transforms = spec.pop("transforms", None) or cfg.get("transforms")
    spec.pop("return_masks", None)
    if transforms is not None:
        transforms = Compose(**{k: v for k, v in transforms.items() if k != "type"}, where=f"{where}.transforms")
    for key in ("ram_cache", "cache_imgsz"):
        if cfg.get(key) is not None and key not in spec:
            spec[key] = cfg[key]
    return cls(transforms=transforms, verbose=verbose, **spec)


def build_collate(cfg: dict | None, split: str):
    spec = dict(cfg or {})
    cls = COLLATES.get(spec.pop("type", "BatchImageCollateFunction"), where=f"{split}_dataloader.collate_fn.type")
    return cls(**spec)


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
    shuffle = cfg.get("shuffle")
    shuffle = split == "train" if shuffle is None else shuffle
    drop_last = cfg.get("drop_last")
    workers = cfg.get("num_workers") or 0
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed) if distributed else None
    pin_memory, persistent = cfg.get("pin_memory"), cfg.get("persistent_workers")
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=workers, collate_fn=build_collate(cfg.get("collate_fn"), split),
        drop_last=split == "train" if drop_last is None else drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=(workers > 0 if persistent is None else persistent) and workers > 0,
        generator=generator)


def set_epoch(loader, epoch: int) -> None:
    """Drive the augmentation policy (dataset and collate) and the distributed shuffle for `epoch`."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.collate_fn, "set_epoch"):
        loader.collate_fn.set_epoch(epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
