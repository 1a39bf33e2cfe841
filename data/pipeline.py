"""A dataset's transform pipeline from its config: `ops` (`{type: Name, ...}` rows of
`data.transforms.TRANSFORMS`, Mosaic included) under an augmentation `policy`.

DEIM's `stop_epoch` policy: the policy ops are off before `epoch[0]` and from `epoch[-1]` on; Mosaic
runs (with `mosaic_prob`) only in `[epoch[0], epoch[1])`, and a mosaic sample skips RandomZoomOut and
RandomIoUCrop. A single-number `epoch` only stops the ops at that epoch.
"""
from __future__ import annotations

import random
from typing import Literal

from pydantic import confloat

import data.mosaic  # noqa: F401  (registers Mosaic)
from core.errors import ConfigError
from core.schema import Section, check_call, validate_section
from data.transforms import TRANSFORMS


class PolicyConfig(Section):
    """`transforms.policy`: which ops stop (and when); `epoch` is [start, mosaic_end, stop] or one
    number, derived from the run's `epochs` when left unset."""
    name: Literal["default", "stop_epoch"] = "stop_epoch"
    epoch: int | list[int] | None = None
    ops: list[str] = []


class TransformsConfig(Section):
    """A dataset's `transforms` (official `type: Compose` accepted)."""
    type: Literal["Compose"] = "Compose"
    ops: list[dict] = []
    policy: PolicyConfig | None = None
    mosaic_prob: confloat(ge=-1.0, le=1.0) = -0.1


# ops that may follow ConvertBoxes: they leave the boxes alone (a flip or crop after it would not
# move the already-converted boxes)
_AFTER_CONVERT_BOXES = ("ConvertPILImage", "Normalize")


def check_transforms(section, where: str, split: str = "val") -> dict | None:
    """The validated `transforms` section; every op's keys checked against its constructor, and the
    ops the trainer relies on present: ConvertPILImage in every split (the collate stacks tensors)
    and, for training, ConvertBoxes to normalized cxcywh as the last box op (the criterion reads
    normalized cxcywh; pixel xyxy boxes would train without an error, on wrong targets)."""
    if section is None:
        raise ConfigError("the dataset has no transforms: images stay PIL images and boxes stay pixel xyxy",
                          where=where, hint="copy the `transforms` of configs/recipes/dataloader.yml")
    cfg = validate_section(TransformsConfig, section, where).model_dump(exclude_none=True)
    for i, op in enumerate(cfg["ops"]):
        op_where = f"{where}.ops[{i}]"
        if "type" not in op:
            raise ConfigError(f"a transform must be a mapping with a `type`, got {op!r}", where=op_where,
                              hint="e.g. {type: RandomHorizontalFlip}")
        kwargs = {k: v for k, v in op.items() if k != "type"}
        cfg["ops"][i] = {"type": op["type"],
                         **check_call(TRANSFORMS.get(op["type"], where=f"{op_where}.type"), kwargs, op_where)}
    names = [op["type"] for op in cfg["ops"]]
    for name in (cfg.get("policy") or {}).get("ops", []):
        if name not in names:
            raise ConfigError(f"policy op {name!r} is not among the ops ({', '.join(names) or 'none'})",
                              where=f"{where}.policy.ops", hint="name ops by their `type`")
    check_required_ops(cfg, where, split)
    return cfg


def check_required_ops(cfg: dict, where: str, split: str) -> None:
    """The conversions present, outside the policy ops, and (training) ConvertBoxes after every op that
    moves the image, to normalized cxcywh."""
    names = [op["type"] for op in cfg["ops"]]
    policy_ops = set((cfg.get("policy") or {}).get("ops", []))
    required = ["ConvertPILImage"] + (["ConvertBoxes"] if split == "train" else [])
    for name in required:
        if name not in names:
            boxes = ", {type: ConvertBoxes, fmt: cxcywh, normalize: true}" if split == "train" else ""
            raise ConfigError(f"the {split} transforms have no {name}", where=f"{where}.ops",
                              hint="end the ops as configs/recipes/dataloader.yml does: "
                                   "{type: ConvertPILImage, dtype: float32, scale: true}" + boxes)
        if name in policy_ops:
            raise ConfigError(f"{name} is among the policy ops, so it would stop with them",
                              where=f"{where}.policy.ops", hint=f"take {name} out of policy.ops")
    if split != "train":
        return
    last = len(names) - 1 - names[::-1].index("ConvertBoxes")
    op = cfg["ops"][last]
    if op.get("fmt", "cxcywh").lower() != "cxcywh" or not op.get("normalize", True):
        raise ConfigError(f"ConvertBoxes gives fmt {op.get('fmt')!r}, normalize {op.get('normalize')}; the criterion "
                          "reads normalized cxcywh boxes", where=f"{where}.ops[{last}]",
                          hint="use {type: ConvertBoxes, fmt: cxcywh, normalize: true}")
    moved = [name for name in names[last + 1:] if name not in _AFTER_CONVERT_BOXES]
    if moved:
        raise ConfigError(f"{', '.join(moved)} after ConvertBoxes would change the image but not the converted boxes",
                          where=f"{where}.ops", hint="put ConvertBoxes after every op that moves or resizes the image")


def build_op(spec, where: str):
    """One transform from `{type: Name, **kwargs}` (or an already-built callable)."""
    if callable(spec):
        return type(spec).__name__, spec
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"a transform must be a mapping with a `type`, got {spec!r}", where=where)
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    name = spec["type"]
    op = TRANSFORMS.get(name, where=f"{where}.type")
    try:
        return name, op(**kwargs)
    except TypeError as err:
        raise ConfigError(f"bad arguments for {name}: {err}", where=where) from None


class Compose:
    """Applies `ops` in order under an augmentation `policy` driven by the dataset's epoch."""

    def __init__(self, ops=None, policy=None, mosaic_prob: float = -0.1, where: str = "transforms"):
        built = [build_op(op, f"{where}.ops[{i}]") for i, op in enumerate(ops or [])]
        self.names, self.ops = [n for n, _ in built], [op for _, op in built]
        self.policy = dict(policy or {"name": "default"})
        self.policy.setdefault("name", "stop_epoch")
        if self.policy["name"] not in ("default", "stop_epoch"):
            raise ConfigError(f"unknown policy {self.policy['name']!r}", where=f"{where}.policy.name",
                              hint="use stop_epoch (or leave policy out)")
        stages = self.policy.get("epoch")
        if self.policy["name"] == "stop_epoch" and not (isinstance(stages, int) or (
                isinstance(stages, (list, tuple)) and len(stages) == 3)):
            raise ConfigError(f"policy stop_epoch needs `epoch`: [start, mosaic_end, stop] or one number, got {stages!r}",
                              where=f"{where}.policy.epoch", hint="give it, or leave it ~ and set the run's `epochs` to derive it")
        self.mosaic_prob = mosaic_prob

    def active_ops(self, epoch: int, with_mosaic: bool) -> list[bool]:
        """Which ops run for a sample at `epoch`, given the mosaic coin flip."""
        if self.policy["name"] == "default":
            return [True] * len(self.ops)
        stages, policy_ops = self.policy["epoch"], set(self.policy.get("ops", []))
        if isinstance(stages, (list, tuple)) and len(stages) == 3:
            active = []
            for name in self.names:
                if name in policy_ops and not stages[0] <= epoch < stages[-1]:
                    active.append(False)
                elif name == "Mosaic":
                    active.append(with_mosaic)
                else:
                    active.append(not (with_mosaic and name in ("RandomZoomOut", "RandomIoUCrop")))
            return active
        return [not (name in policy_ops and epoch >= stages) for name in self.names]

    def mosaic_window(self, epoch: int) -> bool:
        stages = self.policy.get("epoch")
        return (self.policy["name"] == "stop_epoch" and isinstance(stages, (list, tuple)) and len(stages) == 3
                and stages[0] <= epoch < stages[1])

    def __call__(self, image, target, dataset=None):
        epoch = dataset.epoch if dataset is not None else 0
        with_mosaic = self.mosaic_window(epoch) and random.random() <= self.mosaic_prob
        for name, op, active in zip(self.names, self.ops, self.active_ops(epoch, with_mosaic)):
            if active:
                image, target = op(image, target, dataset) if getattr(op, "uses_dataset", False) else op(image, target)
        return image, target


def eval_preprocessing(cfg: dict, imgsz) -> dict:
    """Resize size/letterbox and normalisation of the val pipeline (what the model was evaluated with)."""
    options = {"imgsz": list(imgsz), "letterbox": False, "normalize": False}
    section = cfg.get("val_dataloader") or {}
    transforms = (section.get("dataset") or {}).get("transforms") or section.get("transforms") or {}
    for op in transforms.get("ops") or []:
        if not isinstance(op, dict):
            continue
        if op.get("type") == "Resize":
            options["imgsz"] = op.get("size", options["imgsz"])
            options["letterbox"] = bool(op.get("letterbox", False))
        if op.get("type") == "Normalize":
            options["normalize"] = (op["mean"], op["std"]) if "mean" in op and "std" in op else True
    return options
