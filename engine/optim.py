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

import math
import re

import torch
from torch import nn

from core.errors import ConfigError

GROUP_KEYS = {"params", "lr", "weight_decay", "betas", "eps"}


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
    if not isinstance(specs, list):
        raise ConfigError("optimizer.params must be a list of groups", where="optimizer.params",
                          hint="write `- {params: '^(?=.*backbone)(?!.*norm).*$', lr: 0.0001}` per group")
    claimed: dict[str, int] = {}
    groups = []
    for index, spec in enumerate(specs):
        where = f"optimizer.params[{index}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("params"), str):
            raise ConfigError("each group needs `params: <regex>`", where=where)
        unknown = set(spec) - GROUP_KEYS
        if unknown:
            raise ConfigError(f"unknown group keys {sorted(unknown)}", where=where, hint=f"allowed: {sorted(GROUP_KEYS)}")
        try:
            pattern = re.compile(spec["params"])
        except re.error as err:
            raise ConfigError(f"bad regex {spec['params']!r}: {err}", where=where) from None
        members = []
        for name, p in trainable:
            if pattern.search(qualified[name]):
                if name in claimed:
                    raise ConfigError(
                        f"parameter {qualified[name]} is claimed by group {claimed[name]} and group {index}",
                        where=where, hint="make the regexes disjoint (add a negative lookahead such as (?!.*norm))")
                claimed[name] = index
                members.append(p)
        groups.append({**{k: v for k, v in spec.items() if k != "params"}, "params": members,
                       "name": f"group{index}", "pattern": spec["params"]})
    rest = [(name, p) for name, p in trainable if name not in claimed]
    if rest:
        if cfg.get("rest", "default") == "error":
            raise ConfigError(f"{len(rest)} parameters are claimed by no group, e.g. {qualified[rest[0][0]]}",
                              where="optimizer.params", hint="add a group that matches them, or drop `rest: error`")
        groups.append({"params": [p for _, p in rest], "name": "default", "pattern": None})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    kind = cfg.pop("type", "AdamW")
    cfg.pop("rest", None)
    groups = param_groups(model, cfg)
    cfg.pop("params", None)
    for g in groups:  # optimizer groups take only optimizer arguments
        g.pop("pattern", None)
    builders = {"AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD}
    if kind not in builders:
        raise ConfigError(f"unknown optimizer {kind!r}", where="optimizer.type", hint=f"one of {sorted(builders)}")
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    try:
        optimizer = builders[kind](groups, **cfg)
    except TypeError as err:
        raise ConfigError(f"bad optimizer arguments: {err}", where="optimizer") from None
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
    """Sets every group's lr from (global step, epoch) before each optimizer step.

    type MultiStepLR: lr = base * gamma^(milestones passed by `epoch`), times a linear warm-up
        factor min(1, (step + 1) / warmup_duration) (lr_warmup_scheduler: LinearWarmup).
    type FlatCosine: DEIM's flat-cosine over iterations; min lr = base * lr_gamma.
    """

    def __init__(self, optimizer, cfg: dict, warmup_cfg: dict | None, iters_per_epoch: int, epochs: int):
        self.optimizer = optimizer
        self.kind = cfg.get("type", "MultiStepLR")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.iters_per_epoch = iters_per_epoch
        if self.kind in ("FlatCosine", "FlatCosineLRScheduler", "flatcosine"):
            self.kind = "FlatCosine"
            self.lr_gamma = float(cfg.get("lr_gamma", 0.5))
            self.warmup = int(cfg.get("warmup_iter", 2000))
            self.total = int(iters_per_epoch * epochs)
            self.flat = int(iters_per_epoch * cfg.get("flat_epoch", epochs))
            self.no_aug = int(iters_per_epoch * cfg.get("no_aug_epoch", 0))
        elif self.kind == "MultiStepLR":
            self.milestones = sorted(int(m) for m in cfg.get("milestones", []))
            self.gamma = float(cfg.get("gamma", 0.1))
            self.warmup = int((warmup_cfg or {}).get("warmup_duration", 0))
            if warmup_cfg and warmup_cfg.get("type", "LinearWarmup") != "LinearWarmup":
                raise ConfigError(f"unknown warm-up {warmup_cfg.get('type')!r}", where="lr_warmup_scheduler.type",
                                  hint="LinearWarmup")
        else:
            raise ConfigError(f"unknown lr scheduler {self.kind!r}", where="lr_scheduler.type",
                              hint="MultiStepLR (with lr_warmup_scheduler: LinearWarmup) or FlatCosine")

    def lr(self, base: float, step: int, epoch: int) -> float:
        if self.kind == "FlatCosine":
            return flat_cosine(step, self.total, self.warmup, self.flat, self.no_aug, base, base * self.lr_gamma)
        decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        return base * decay * warm

    def set(self, step: int, epoch: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr(base, step, epoch)


def scale_lr(cfg: dict, total_batch_size: int) -> dict:
    """Linear scaling rule: lr' = lr * total_batch / base_batch for the top level and every group.

    `scale_lr_with_batch: {base_batch_size: 32}` turns it on; without it the config's lrs stay."""
    rule = cfg.get("scale_lr_with_batch")
    if not rule:
        return cfg
    base = rule.get("base_batch_size") if isinstance(rule, dict) else None
    if not isinstance(base, int) or base <= 0:
        raise ConfigError("scale_lr_with_batch needs base_batch_size: <int>", where="scale_lr_with_batch",
                          hint="the batch size the recipe's lrs were tuned for, e.g. {base_batch_size: 32}")
    factor = total_batch_size / base
    optimizer = cfg["optimizer"]
    optimizer["lr"] = optimizer["lr"] * factor
    for group in optimizer.get("params") or []:
        if "lr" in group:
            group["lr"] = group["lr"] * factor
    return cfg
