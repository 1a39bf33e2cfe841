"""Run configs: YAML files composed with `__include__`, then `-u a.b=value` overrides.

`__include__` lists files relative to the including file; they merge in order (later wins) and
the including file merges last. Merging is deep for mappings; any other value is replaced.
Every leaf remembers the file (or `-u`) it came from, so `python -m analyze.config` can show it.
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError, DetrZooError
from core.yaml_io import load_yaml

INCLUDE = "__include__"

# Top-level keys of a run config; anything else is a typo or an old spelling.
KNOWN_KEYS = {
    "graph", "scale", "nc", "imgsz", "epochs", "output_dir", "summary_dir", "train_dataloader",
    "val_dataloader", "criterion", "postprocessor", "optimizer", "lr_scheduler", "lr_warmup_scheduler",
    "ema", "use_ema", "use_amp", "clip_max_norm", "checkpoint_freq", "print_freq", "eval_score_threshold",
    "distill", "seed", "device", "sync_bn", "find_unused_parameters", "plot_train_batch_freq",
    "max_bad_steps", "scale_lr_with_batch", "evaluator", "task", "yolo_metrics", "progress_bar",
    "flat_epoch", "no_aug_epoch",  # top level as in the official configs; filled from `epochs` when unset
}
# Spellings users bring from the official DEIM/D-FINE configs, with where the value lives here.
OLD_SPELLINGS = {
    "epoches": "epochs",
    "num_classes": "nc",
    "lrsheduler": "lr_scheduler.type: FlatCosine",
    "lr_gamma": "lr_scheduler.lr_gamma",
    "warmup_iter": "lr_scheduler.warmup_iter",
    "eval_spatial_size": "imgsz",
}


# YAML 1.1 reads `1e-4` (no dot) as a string; users write learning rates that way.
_EXPONENT_FLOAT = re.compile(r"^[-+]?\d+(\.\d*)?[eE][-+]?\d+$")


def coerce_numbers(value):
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        return float(value)
    if isinstance(value, dict):
        return {k: coerce_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_numbers(v) for v in value]
    return value


def deep_merge(base: dict, top: dict, sources: dict | None = None, origin: str = "", prefix: str = "") -> dict:
    """Merge `top` into `base` in place (mappings recursively, everything else replaced)."""
    for key, value in top.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value, sources, origin, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)
            if sources is not None:
                for leaf in list(sources):
                    if leaf == dotted or leaf.startswith(dotted + "."):
                        del sources[leaf]
                _record(value, dotted, origin, sources)
    return base


def _record(value, dotted, origin, sources):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _record(sub, f"{dotted}.{key}", origin, sources)
    else:
        sources[dotted] = origin


def _load_file(path: Path, stack: tuple[Path, ...], sources: dict) -> dict:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"__include__ cycle: {chain}", where=str(stack[-1]),
                          hint="remove one of the includes so no file includes itself through others")
    try:
        spec = load_yaml(path)
    except DetrZooError as err:
        where = str(stack[-1]) + ": __include__" if stack else None
        raise ConfigError(err.message, hint=err.hint, where=err.where or where) from None
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError("a config file must be a mapping of keys to values", where=str(path))
    spec = coerce_numbers(spec)
    includes = spec.pop(INCLUDE, None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{INCLUDE} must be a list of file paths, got {includes!r}", where=f"{path}: {INCLUDE}")
    merged: dict = {}
    for include in includes:
        target = Path(include).expanduser()
        target = target if target.is_absolute() else path.parent / target
        if not target.is_file():
            raise ConfigError(f"included file not found: {include}", where=f"{path}: {INCLUDE}",
                              hint=f"paths are relative to the including file's folder ({path.parent})")
        deep_merge(merged, _load_file(target, (*stack, path), sources), sources=None)
    # The sources of included values were recorded while loading them; this file's own values win.
    deep_merge(merged, spec, sources, str(path))
    return merged


def parse_update(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value", where="-u",
                          hint="write e.g. -u train_dataloader.batch_size=8 epochs=12")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override key {key!r} has an empty part", where="-u")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"value of {key} is not valid YAML: {err}", where="-u",
                          hint="quote lists and mappings for the shell, e.g. -u 'imgsz=[320, 320]'") from None
    return keys, coerce_numbers(value)


def apply_update(cfg: dict, text: str, sources: dict | None = None) -> None:
    keys, value = parse_update(text)
    node = cfg
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key) if isinstance(node, dict) else None
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[:depth + 1])} is a "
                              f"{type(child).__name__}, not a mapping", where="-u")
        node = child
    deep_merge(node, {keys[-1]: value}, sources, "-u " + text, ".".join(keys[:-1]) + "." if len(keys) > 1 else "")


def check_keys(cfg: dict, where: str) -> None:
    for key in cfg:
        if key in KNOWN_KEYS:
            continue
        if key in OLD_SPELLINGS:
            raise ConfigError(f"unknown key {key!r} (an official DEIM/D-FINE spelling)", where=f"{where}: {key}",
                              hint=f"here it is `{OLD_SPELLINGS[key]}`")
        close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
        raise ConfigError(f"unknown key {key!r}", where=f"{where}: {key}",
                          hint=f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(sorted(KNOWN_KEYS))}")


def load_config(path: str | Path, updates: list[str] | tuple = (), with_sources: bool = False, check: bool = True):
    """Compose a run config; return it (and, with `with_sources`, {dotted key: origin})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass -c with a path to a .yml run config")
    sources: dict[str, str] = {}
    cfg = _load_file(path, (), sources)
    for text in updates or ():
        apply_update(cfg, text, sources)
    if check:
        check_keys(cfg, str(path))
    return (cfg, sources) if with_sources else cfg


def get(cfg: dict, dotted: str, default=None):
    """Read `a.b.c` from nested dicts; `default` when any part is missing."""
    node = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
