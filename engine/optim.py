"""Optimizer and learning-rate schedules.

Parameter groups are chosen by regex over QUALIFIED names `<section>.<state-dict name>`, e.g.
`backbone.layers.3.stages.0.blocks.0.conv.weight`, so the official DEIM/D-FINE regexes
(`backbone`, `norm|bn`, `encoder|decoder`) keep working on our layer-list graphs. A group's regex
is searched anywhere in the name (`re.search`, like the official `re.findall`). A parameter that
two groups claim is an error; one that no group claims joins the default group (the optimizer's
top-level settings, as in the official code) unless `rest: error` asks for every parameter to be
claimed explicitly.

Schedules are pure functions of (global step, epoch), so a resumed run sets exactly the learning
rate the uninterrupted run had.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Literal

import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from core import dist
from core.errors import ConfigError
from core.registry import Registry
from core.schema import Section, validate_section

OPTIMIZERS = Registry("optimizer type")
for _cls in (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD):
    OPTIMIZERS.register(_cls)


class ParamGroupConfig(Section):
    """One `optimizer.params` entry: a regex over qualified parameter names and its settings."""
    params: str
    lr: PositiveFloat | None = None
    weight_decay: NonNegativeFloat | None = None
    betas: tuple[float, float] | None = None
    eps: PositiveFloat | None = None

    @field_validator("params")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"bad regex {value!r}: {err}") from None
        return value


class OptimizerConfig(Section):
    """The `optimizer:` section (official keys). Unset settings keep torch's defaults."""
    type: str = "AdamW"                          # a name in OPTIMIZERS
    params: list[ParamGroupConfig] = []
    lr: PositiveFloat = 1e-4
    betas: tuple[float, float] | None = None
    weight_decay: NonNegativeFloat | None = None
    eps: PositiveFloat | None = None
    momentum: NonNegativeFloat | None = None     # SGD
    nesterov: bool | None = None                 # SGD
    rest: Literal["default", "error"] = "default"  # parameters no group claims: the top-level group, or an error
    # how torch runs the update: one fused kernel over all parameters, per-op over lists (foreach), or a
    # Python loop per parameter (torch's default on the CPU). auto = fused where torch has it for the device.
    implementation: Literal["auto", "fused", "foreach", "loop"] = "auto"

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer type {value!r}; {OPTIMIZERS.suggest(value)}")
        return value


class LRSchedulerConfig(Section):
    """`lr_scheduler:` MultiStepLR (epoch milestones) or FlatCosine (DEIM's flat-cosine over iterations;
    its flat and no-augmentation lengths are the top-level `flat_epoch` / `no_aug_epoch`)."""
    type: Literal["MultiStepLR", "FlatCosine"] = "MultiStepLR"
    milestones: list[NonNegativeInt] = []
    gamma: PositiveFloat = 0.1
    lr_gamma: NonNegativeFloat = 0.5
    warmup_iter: NonNegativeInt = 2000

    @field_validator("type", mode="before")
    @classmethod
    def _official_names(cls, value):
        return "FlatCosine" if value in ("flatcosine", "FlatCosineLRScheduler") else value


class WarmupConfig(Section):
    """`lr_warmup_scheduler:` a linear warm-up over `warmup_duration` iterations (MultiStepLR only)."""
    type: Literal["LinearWarmup"] = "LinearWarmup"
    warmup_duration: NonNegativeInt = 0


class LRScaleConfig(Section):
    """`scale_lr_with_batch:` scale every lr linearly with the total batch over `base_batch_size`."""
    base_batch_size: PositiveInt


def qualified_names(model: nn.Module) -> dict[str, str]:
    """{state-dict name: `<section>.<state-dict name>`} for every parameter of a Detector.

    Rows live at `layers.<i>.`; the section (backbone/encoder/decoder) comes from the graph row.
    A model without graph rows keeps its plain names."""
    rows = getattr(model, "rows", None)
    names = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if rows is not None and len(parts) > 2 and parts[0] == "layers" and parts[1].isdigit():
            names[name] = f"{rows[int(parts[1])].section}.{name}"
        else:
            names[name] = name
    return names


def param_groups(model: nn.Module, cfg: dict) -> list[dict]:
    """Split the trainable parameters into the optimizer groups that `cfg['params']` describes."""
    qualified = qualified_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    specs = cfg.get("params") or []
    claimed: dict[str, int] = {}
    groups = []
    for index, spec in enumerate(specs):
        where = f"optimizer.params[{index}]"
        spec = {k: v for k, v in spec.items() if v is not None}
        pattern = re.compile(spec["params"])
        members = []
        for name, p in trainable:
            if pattern.search(qualified[name]):
                if name in claimed:
                    raise ConfigError(
                        f"parameter {qualified[name]} is claimed by group {claimed[name]} and group {index}",
                        where=where, hint="make the regexes disjoint (add a negative lookahead such as (?!.*norm))")
                claimed[name] = index
                members.append(p)
        if not members and dist.is_main():   # a typo, or a regex for other names (some official ones claim nothing)
            example = next(iter(qualified.values()), "")
            print(f"note: {where} ({spec['params']!r}) matches no trainable parameter, so its settings apply to "
                  f"none; the regexes see names such as {example!r}")
        groups.append({**{k: v for k, v in spec.items() if k != "params"}, "params": members,
                       "name": f"group{index}", "pattern": spec["params"]})
    rest = [(name, p) for name, p in trainable if name not in claimed]
    if rest:
        if cfg.get("rest", "default") == "error":
            raise ConfigError(f"{len(rest)} parameters are claimed by no group, e.g. {qualified[rest[0][0]]}",
                              where="optimizer.params", hint="add a group that matches them, or drop `rest: error`")
        groups.append({"params": [p for _, p in rest], "name": "default", "pattern": None})
    return [g for g in groups if g["params"]]


def implementation_flags(implementation: str, params: list[torch.Tensor]) -> dict:
    """torch's `fused` / `foreach` arguments for an `optimizer.implementation`.

    Fused and foreach updates compute the same formula as the per-parameter loop; they differ from it
    by float rounding only (tests/test_engine_optim.py). `auto` takes fused when every parameter is a
    floating-point tensor on a device with fused kernels (CPU, CUDA), else torch's own choice."""
    if implementation == "loop":
        return {"foreach": False}
    if implementation == "foreach":
        return {"foreach": True}
    if implementation == "fused":
        return {"fused": True}
    fused_devices = _get_fused_kernels_supported_devices()
    if params and all(p.is_floating_point() and p.device.type in fused_devices for p in params):
        return {"fused": True}
    return {}


def check_optimizer_keys(cls, cfg: dict, groups: list[dict]) -> None:
    """Settings the optimizer does not take, by key (a recipe's AdamW betas under `type: SGD`)."""
    takes = set(inspect.signature(cls).parameters)
    settings = [("optimizer", cfg)] + [(f"optimizer.params[{g['name'][5:]}]", g) for g in groups
                                       if g["name"].startswith("group")]
    for where, values in settings:
        for key in values:
            if key not in takes and key not in ("params", "name"):
                how = f"-u {where}.{key}=~" if where == "optimizer" else "from that group"
                raise ConfigError(f"{cls.__name__} takes no {key}", where=f"{where}.{key}",
                                  hint=f"drop it ({how}); {cls.__name__} takes {', '.join(sorted(takes - {'params'}))}")


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """The optimizer of an `optimizer:` section (validated by OptimizerConfig here)."""
    cfg = validate_section(OptimizerConfig, cfg, "optimizer").model_dump(exclude_none=True)
    kind = cfg.pop("type")
    groups = param_groups(model, cfg)
    for key in ("params", "rest"):
        cfg.pop(key)
    for g in groups:  # optimizer groups take only optimizer arguments
        g.pop("pattern", None)
    flags = implementation_flags(cfg.pop("implementation"), [p for g in groups for p in g["params"]])
    check_optimizer_keys(OPTIMIZERS.get(kind), cfg, groups)
    try:
        optimizer = OPTIMIZERS.get(kind)(groups, **cfg, **flags)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"bad {kind} arguments: {err}", where="optimizer",
                          hint="optimizer.implementation: foreach or loop where fused is not supported") from None
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return optimizer


def flat_cosine(step: int, total: int, warmup: int, flat: int, no_aug: int, base: float, minimum: float) -> float:
    """DEIM's schedule: quadratic warm-up, flat, cosine decay, then the minimum for the no-aug tail."""
    if step <= warmup:
        return base * (step / warmup) ** 2 if warmup > 0 else base
    if step <= flat:
        return base
    if step >= total - no_aug:
        return minimum
    progress = (step - flat) / max(total - flat - no_aug, 1)
    return minimum + (base - minimum) * 0.5 * (1 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets every group's lr for global step `step` (of epoch `epoch`); the Solver sets it once a run
    starts and then after each optimizer step for the next one, as the official trainers do, so the
    lr an optimizer state carries (a resumed or stage-2 reloaded one) serves the step after the load.

    type MultiStepLR: lr = base * gamma^(milestones passed by `epoch`), times a linear warm-up
        factor min(1, (step + 1) / warmup_duration) (lr_warmup_scheduler: LinearWarmup).
    type FlatCosine: DEIM's flat-cosine over iterations; min lr = base * lr_gamma. As in the official
        trainer, step s runs at the schedule's value of iteration s - 1 (its scheduler is stepped with
        the index of the step just done), and step 0 at base x the linear warm-up's first factor
        (1 / warmup_duration): the official LinearWarmup is built under flat-cosine too, and its
        construction sets that lr, though it is never stepped.
    """

    def __init__(self, optimizer, cfg: dict, warmup_cfg: dict | None, iters_per_epoch: int, epochs: int,
                 flat_epoch: int | None = None, no_aug_epoch: int = 0):
        cfg = validate_section(LRSchedulerConfig, cfg, "lr_scheduler")
        warmup = validate_section(WarmupConfig, warmup_cfg, "lr_warmup_scheduler")
        self.optimizer = optimizer
        self.kind = cfg.type
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.iters_per_epoch = iters_per_epoch
        if self.kind == "FlatCosine":
            self.lr_gamma = cfg.lr_gamma
            self.warmup = cfg.warmup_iter
            self.total = int(iters_per_epoch * epochs)
            self.flat = int(iters_per_epoch * (epochs if flat_epoch is None else flat_epoch))
            self.no_aug = int(iters_per_epoch * no_aug_epoch)
            self.first_factor = min(1.0, 1 / warmup.warmup_duration) if warmup.warmup_duration > 0 else 1.0
        else:
            self.milestones = sorted(cfg.milestones)
            self.gamma = cfg.gamma
            self.warmup = warmup.warmup_duration

    def lr(self, base: float, step: int, epoch: int) -> float:
        if self.kind == "FlatCosine":
            if step == 0:
                return base * self.first_factor
            return flat_cosine(step - 1, self.total, self.warmup, self.flat, self.no_aug, base, base * self.lr_gamma)
        decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        return base * decay * warm

    def set(self, step: int, epoch: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr(base, step, epoch)
