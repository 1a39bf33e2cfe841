"""Losses, matchers and the criteria of the DETR family; `build_criterion(cfg)` makes one from a recipe.

cfg = {"type": "DEIMCriterion", "weight_dict": {...}, "losses": [...], "gamma": 1.5, ...,
       "matcher": {"type": "HungarianMatcher", "weight_dict": {...}, "alpha": 0.25, "gamma": 2.0}}
Names and arguments are the official configs' (D-FINE, DEIM, DEIMv2, RT-DETRv2, RT-DETRv4).
"""
from __future__ import annotations

import inspect

from torch import nn

from models.criterion.families import (DEIMCriterion, DEIMv2Criterion, DFINECriterion, RTDETRv2Criterion,
                                       RTv4Criterion)
from models.criterion.matcher import HungarianMatcher
from models.criterion.set_criterion import DETRCriterion
from models.criterion.targets import TargetError
from core.errors import ConfigError

CRITERIA: dict[str, type[nn.Module]] = {
    "DFINECriterion": DFINECriterion,
    "DEIMCriterion": DEIMCriterion,
    "DEIMv2Criterion": DEIMv2Criterion,
    "RTDETRv2Criterion": RTDETRv2Criterion,
    "RTDETRCriterionv2": RTDETRv2Criterion,  # the official RT-DETRv2 spelling
    "RTv4Criterion": RTv4Criterion,
    "RTDETRv4Criterion": RTv4Criterion,
}
MATCHERS: dict[str, type[nn.Module]] = {"HungarianMatcher": HungarianMatcher}


def register_criterion(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a criterion class buildable by its name from a recipe."""
    CRITERIA[cls.__name__] = cls
    return cls


def _construct(registry: dict, cfg: dict, where: str) -> nn.Module:
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    if name not in registry:
        raise ConfigError(f"unknown type {name!r}", where=where, hint=f"choose from {sorted(registry)}")
    cls = registry[name]
    try:
        inspect.signature(cls).bind(**cfg)
    except TypeError as err:
        raise ConfigError(f"{name}: {err}", where=where,
                          hint=f"arguments of {name}: {list(inspect.signature(cls).parameters)}") from None
    return cls(**cfg)


def build_matcher(cfg: dict) -> nn.Module:
    return _construct(MATCHERS, cfg, "criterion.matcher")


def build_criterion(cfg: dict) -> nn.Module:
    """Build the criterion named by cfg["type"]; cfg["matcher"] is a matcher config (or a module)."""
    cfg = dict(cfg)
    matcher = cfg.get("matcher")
    if matcher is None:
        raise ConfigError("the criterion has no matcher", where="criterion.matcher",
                          hint="add matcher: {type: HungarianMatcher, weight_dict: {cost_class: 2, cost_bbox: 5, "
                               "cost_giou: 2}, alpha: 0.25, gamma: 2.0}")
    if isinstance(matcher, dict):
        cfg["matcher"] = build_matcher(matcher)
    return _construct(CRITERIA, cfg, "criterion")


__all__ = ["CRITERIA", "MATCHERS", "DETRCriterion", "DFINECriterion", "DEIMCriterion", "DEIMv2Criterion",
           "RTDETRv2Criterion", "RTv4Criterion", "HungarianMatcher", "TargetError", "build_criterion",
           "build_matcher", "register_criterion"]
