"""Losses, matchers and the criteria of the DETR family; `build_criterion(cfg)` makes one from a recipe.

cfg = {"type": "DEIMCriterion", "weight_dict": {...}, "losses": [...], "gamma": 1.5, ...,
       "matcher": {"type": "HungarianMatcher", "weight_dict": {...}, "alpha": 0.25, "gamma": 2.0}}
Names and arguments are the official configs' (D-FINE, DEIM, DEIMv2, RT-DETRv2, RT-DETRv4).
"""
from __future__ import annotations

from torch import nn

from models.criterion.families import (DEIMCriterion, DEIMv2Criterion, DFINECriterion, RTDETRv2Criterion,
                                       RTv4Criterion)
from models.criterion.matcher import HungarianMatcher
from models.criterion.set_criterion import DETRCriterion
from models.criterion.targets import TargetError
from core.errors import ConfigError
from core.registry import Registry
from core.schema import check_call

CRITERIA = Registry("criterion type")
for _cls in (DFINECriterion, DEIMCriterion, DEIMv2Criterion, RTDETRv2Criterion, RTv4Criterion):
    CRITERIA.register(_cls)
CRITERIA.register(RTDETRv2Criterion, name="RTDETRCriterionv2")  # the official RT-DETRv2 spelling
CRITERIA.register(RTv4Criterion, name="RTDETRv4Criterion")
MATCHERS = Registry("matcher type")
MATCHERS.register(HungarianMatcher)
register_criterion = CRITERIA.register


def check_criterion(cfg, where: str = "criterion") -> dict:
    """The `criterion:` section checked against its class and its matcher's (keys, types, required)."""
    if not isinstance(cfg, dict) or not cfg.get("type"):
        raise ConfigError("missing `criterion.type`", where=where, hint="e.g. DEIMCriterion (see configs/recipes/)")
    cfg = dict(cfg)
    cls = CRITERIA.get(cfg.pop("type"), where=f"{where}.type")
    matcher = cfg.pop("matcher", None)
    if not isinstance(matcher, dict):
        raise ConfigError("the criterion has no matcher", where=f"{where}.matcher",
                          hint="add matcher: {type: HungarianMatcher, weight_dict: {cost_class: 2, cost_bbox: 5, "
                               "cost_giou: 2}, alpha: 0.25, gamma: 2.0}")
    matcher = dict(matcher)
    matcher_cls = MATCHERS.get(matcher.pop("type", "HungarianMatcher"), where=f"{where}.matcher.type")
    checked_matcher = check_call(matcher_cls, matcher, f"{where}.matcher")
    checked = check_call(cls, cfg, where, skip=("matcher", "num_classes"))
    return {"type": cls.__name__, **checked, "matcher": {"type": matcher_cls.__name__, **checked_matcher}}


def build_criterion(cfg: dict) -> nn.Module:
    """Build the criterion named by cfg["type"] (with cfg["matcher"] a matcher config) for cfg["num_classes"]."""
    cfg = dict(cfg)
    num_classes = cfg.pop("num_classes", None)
    checked = check_criterion(cfg)
    cls, matcher = CRITERIA.get(checked.pop("type")), dict(checked.pop("matcher"))
    matcher = MATCHERS.get(matcher.pop("type"))(**matcher)
    return cls(matcher=matcher, **checked, **({} if num_classes is None else {"num_classes": num_classes}))


__all__ = ["CRITERIA", "MATCHERS", "DETRCriterion", "DFINECriterion", "DEIMCriterion", "DEIMv2Criterion",
           "RTDETRv2Criterion", "RTv4Criterion", "HungarianMatcher", "TargetError", "build_criterion",
           "check_criterion", "register_criterion"]
