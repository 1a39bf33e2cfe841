"""Derived settings of a run config: the epoch schedule from one `epochs`, the sizes from one `imgsz`.

Both fill values the config leaves out (or sets to null, `~`); values written explicitly win.
"""
from __future__ import annotations

from core.errors import ConfigError


def derive_epochs(epochs: int, no_aug_epoch: int | None = None) -> dict:
    """The DEIM schedule for a run of `epochs` epochs in total (the official `epoches`).

    The official tutorial's rules: the last `no_aug_epoch` epochs (12) train without augmentation,
    n = epochs - no_aug_epoch; the LR stays flat until flat_epoch = 4 + n // 2; the policy is
    [4, flat_epoch, n] (mosaic from 4 to flat_epoch, other augmentation until n); MixUp in
    [4, flat_epoch); CopyBlend in [4, n); multi-scale stops at n; the matcher changes near 0.9 n.
    E.g. 62 epochs -> n 50, flat 29, policy [4, 29, 50]. Short runs shrink the pieces
    (no_aug = epochs // 5 below 60 epochs, start = n // 4 below n = 16)."""
    if not isinstance(epochs, int) or epochs < 2:
        raise ConfigError(f"epochs must be an integer >= 2, got {epochs!r}", where="epochs")
    no_aug = min(12, max(1, epochs // 5)) if no_aug_epoch is None else no_aug_epoch
    n = epochs - no_aug
    start = min(4, n // 4)
    flat = start + n // 2
    return {"epochs": epochs, "no_aug_epoch": no_aug, "flat_epoch": flat, "policy_epoch": [start, flat, n],
            "mixup_epochs": [start, flat], "copyblend_epochs": [start, n], "stop_epoch": n,
            "matcher_change_epoch": round(0.9 * n)}


def _section(cfg: dict, *keys) -> dict | None:
    for key in keys:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, dict) else None


def _fill(section: dict | None, key: str, value) -> None:
    if section is not None and section.get(key) is None:
        section[key] = value


def apply_epochs(run_cfg: dict) -> dict:
    """Fill the schedule's epoch settings left unset in `run_cfg` from its `epochs` (in place)."""
    if run_cfg.get("epochs") is None:
        return run_cfg
    derived = derive_epochs(run_cfg["epochs"], run_cfg.get("no_aug_epoch"))
    _fill(run_cfg, "no_aug_epoch", derived["no_aug_epoch"])
    _fill(run_cfg, "flat_epoch", derived["flat_epoch"])
    policy = _section(run_cfg, "train_dataloader", "dataset", "transforms", "policy")
    _fill(policy, "epoch", derived["policy_epoch"])
    collate = _section(run_cfg, "train_dataloader", "collate_fn")
    for key in ("mixup_epochs", "copyblend_epochs", "stop_epoch"):
        _fill(collate, key, derived[key])
    matcher = _section(run_cfg, "criterion", "matcher")
    if matcher is not None and "matcher_change_epoch" in matcher:
        _fill(matcher, "matcher_change_epoch", derived["matcher_change_epoch"])
    return run_cfg


def apply_imgsz(run_cfg: dict) -> dict:
    """Let the top-level `imgsz` drive every size (in place): the train and eval Resize, the Mosaic
    tile size (imgsz / 2, as the official 320 for 640), the collate's multi-scale base size and the
    RAM-cache size. Multi-scale draws squares, so a non-square imgsz turns it off."""
    imgsz = run_cfg.get("imgsz")
    if imgsz is None:
        return run_cfg
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    for split in ("train_dataloader", "val_dataloader"):
        ops = _section(run_cfg, split, "dataset", "transforms") or {}
        for op in ops.get("ops") or []:
            if isinstance(op, dict) and op.get("type") == "Resize":
                op["size"] = [h, w]
            elif isinstance(op, dict) and op.get("type") == "Mosaic":
                op["output_size"] = min(h, w) // 2
        loader = _section(run_cfg, split)
        if loader is not None and loader.get("ram_cache"):
            loader["cache_imgsz"] = max(h, w)
    collate = _section(run_cfg, "train_dataloader", "collate_fn")
    if collate is not None:
        collate["base_size"] = h
        if h != w and collate.get("base_size_repeat") is not None:
            print(f"imgsz {h}x{w} is not square: multi-scale training is off")
            collate["base_size_repeat"] = None
    return run_cfg
