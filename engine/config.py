"""Run configs: YAML files composed with `__include__`, then `-u a.b=value` overrides.

`__include__` lists files relative to the including file; they merge in order (later wins) and
the including file merges last. Merging is deep for mappings; any other value is replaced.
Every leaf remembers the file (or `-u`) it came from, so `python -m analyze.config` can show it.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt, confloat

from core.errors import ConfigError, DetrZooError
from core.schema import ImageSize, Section, check_call, validate_section
from core.yaml_io import load_yaml
from engine.vocabulary import translate

INCLUDE = "__include__"
# A `graphs/...` or `configs/...` path found neither from the current folder nor beside the file naming
# it is the checkout's file, as on the `detrzoo` command line: a config copied into a project keeps working.
CHECKOUT = Path(__file__).resolve().parents[1]
CHECKOUT_FOLDERS = ("graphs/", "configs/")


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
        spec = load_yaml(path, error=ConfigError)
    except DetrZooError as err:
        where = str(stack[-1]) + ": __include__" if stack else None
        raise ConfigError(err.message, hint=err.hint, where=err.where or where) from None
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError("a config file must be a mapping of keys to values", where=str(path),
                          hint="write `key: value` lines, e.g. `graph: graphs/deim/deim-n.yaml` and `epochs: 72`")
    spec = translate(coerce_numbers(spec), str(path))
    _anchor_graph(spec, path)
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
            target = checkout_file(include)
        if target is None:
            raise ConfigError(f"included file not found: {include}", where=f"{path}: {INCLUDE}",
                              hint=f"paths are relative to the including file's folder ({path.parent}); "
                                   f"{' or '.join(CHECKOUT_FOLDERS)} paths may name the checkout's ({CHECKOUT})")
        deep_merge(merged, _load_file(target, (*stack, path), sources), sources=None)
    # The sources of included values were recorded while loading them; this file's own values win.
    deep_merge(merged, spec, sources, str(path))
    return merged


def checkout_file(name: str) -> Path | None:
    """The checkout's file `name` names, for a graphs/ or configs/ path; else None."""
    target = CHECKOUT / name
    return target if name.startswith(CHECKOUT_FOLDERS) and target.is_file() else None


def _anchor_graph(spec: dict, path: Path) -> None:
    """A `graph:` path is located from the file that names it (see locate_graph), as `__include__` paths
    are relative to the including file (so a run config that includes configs/deim/deim-s-coco.yml finds
    its graph from anywhere)."""
    if "graph" in spec:
        spec["graph"] = locate_graph(spec["graph"], path)


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
    """Merge one `-u a.b=value` into `cfg`: the one-key mapping it writes, in our vocabulary."""
    keys, value = parse_update(text)
    spec: dict = {}
    node = spec
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    spec = translate(spec, f"-u {text}")
    _check_mapping_path(cfg, spec, text, len(keys) - 1)
    deep_merge(cfg, spec, sources, "-u " + text)


def _check_mapping_path(cfg: dict, spec: dict, text: str, levels: int, prefix: tuple = ()) -> None:
    """An override may not set a key below a value that is not a mapping (`-u epochs.x=1`). Only the
    first `levels` keys are the path: below them a mapping is the value itself (`-u a.b={c: 1}`)."""
    if len(prefix) >= levels:
        return
    for key, value in spec.items():
        if isinstance(value, dict) and key in cfg:
            dotted = ".".join((*prefix, key))
            if not isinstance(cfg[key], dict) and cfg[key] is not None:
                raise ConfigError(f"cannot set {dotted}.{next(iter(value))}: {dotted} is {type(cfg[key]).__name__!r} "
                                  f"{cfg[key]!r}, not a mapping", where="-u",
                                  hint=f"set {dotted} itself, or check the key's spelling")
            if isinstance(cfg[key], dict):
                _check_mapping_path(cfg[key], value, text, levels, (*prefix, key))


def load_config(path: str | Path, updates: list[str] | tuple = (), with_sources: bool = False):
    """Compose a run config (includes, then `-u` overrides, official keys translated); return it (and,
    with `with_sources`, {dotted key: origin}). `resolve` validates it and fills what it derives."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass -c with a path to a .yml run config")
    sources: dict[str, str] = {}
    cfg = _load_file(path, (), sources)
    for text in updates or ():
        apply_update(cfg, text, sources)
    return (cfg, sources) if with_sources else cfg


def get(cfg: dict, dotted: str, default=None):
    """Read `a.b.c` from nested dicts; `default` when any part is missing."""
    node = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


# ----------------------------------------------------------------------------------- resolution
class RunConfig(Section):
    """The top level of a run config. Sections are checked by the code that consumes them (listed)."""
    graph: str | dict | None = None             # models.factory (a graph file, or the graph itself)
    scale: str | None = None
    nc: PositiveInt | None = None                # the dataset's class count wins; a different nc is reported
    imgsz: ImageSize | None = None               # drives every Resize, Mosaic tile and multi-scale size
    classes: list[str] | None = None             # the class list (label order); default: the datasets' categories
    epochs: PositiveInt = 1
    flat_epoch: NonNegativeInt | None = None     # derived from epochs when unset (official top-level keys)
    no_aug_epoch: NonNegativeInt | None = None
    output_dir: str = "outputs/run"
    summary_dir: str | None = None
    train_dataloader: dict | None = None         # data.loader.check_loader
    val_dataloader: dict | None = None
    criterion: dict | None = None                # models.criterion.check_criterion
    postprocessor: dict | None = None            # models.postprocess.PostProcessor's arguments
    optimizer: dict = {"type": "AdamW", "lr": 1e-4}  # engine.optim.OptimizerConfig
    lr_scheduler: dict | None = None             # engine.optim.LRSchedulerConfig
    lr_warmup_scheduler: dict | None = None      # engine.optim.WarmupConfig
    scale_lr_with_batch: dict | None = None      # engine.optim.LRScaleConfig
    restart_stage2: bool = True                  # at collate_fn.stop_epoch reload best_stg1.pth (engine.solver)
    use_ema: bool = True
    ema: dict | None = None                      # engine.ema.EMAConfig
    use_amp: bool = False
    amp_dtype: Literal["float16", "bfloat16"] | None = None  # default: bf16 where supported, else fp16
    clip_max_norm: NonNegativeFloat = 0.0
    checkpoint_freq: NonNegativeInt = 0
    print_freq: PositiveInt = 10
    plot_train_batch_freq: NonNegativeInt = 12
    eval_score_threshold: confloat(ge=0.0, le=1.0) = 0.0
    distill: dict | None = None                  # engine.distill.check_distill
    seed: int = 0
    device: str | None = None
    sync_bn: bool = False
    find_unused_parameters: bool = False
    max_bad_steps: PositiveInt = 10
    progress_bar: bool = True
    # training speed (engine.solver; bench/vs_official.py measures them): channels-last memory for the
    # convolutions (no gain on this project's CPUs, so off), and torch.compile of the graph rows before the
    # decoder and of the criterion's dense terms (compiling costs minutes on a CPU; the run prints how long)
    channels_last: bool = False
    compile: bool = False
    # keep freed host memory for reuse instead of faulting it in again each step (engine.host_memory;
    # glibc only): a faster CPU step, but whole runs measured no faster and 4-7 % higher in peak RSS, so off
    host_memory_reuse: bool = False


def derive_epochs(epochs: int, no_aug_epoch: int | None = None) -> dict:
    """The DEIM schedule for a run of `epochs` epochs in total (the official `epoches`).

    The official tutorial's rules: the last `no_aug_epoch` epochs (12) train without augmentation,
    n = epochs - no_aug_epoch; the LR stays flat until flat_epoch = 4 + n // 2; the policy is
    [4, flat_epoch, n] (mosaic from 4 to flat_epoch, other augmentation until n); MixUp in
    [4, flat_epoch); CopyBlend in [4, n); multi-scale stops at n; the matcher changes near 0.9 n.
    E.g. 62 epochs -> n 50, flat 29, policy [4, 29, 50]. Short runs shrink the pieces
    (no_aug = epochs // 5 below 60 epochs, start = n // 4 below n = 16)."""
    no_aug = min(12, max(1, epochs // 5)) if no_aug_epoch is None else no_aug_epoch
    if no_aug >= epochs:
        raise ConfigError(f"no_aug_epoch {no_aug} leaves no augmented epoch of {epochs}", where="no_aug_epoch",
                          hint="no_aug_epoch must be below epochs")
    n = epochs - no_aug
    start = min(4, n // 4)
    flat = start + n // 2
    return {"no_aug_epoch": no_aug, "flat_epoch": flat, "policy_epoch": [start, flat, n],
            "mixup_epochs": [start, flat], "copyblend_epochs": [start, n], "stop_epoch": n,
            "matcher_change_epoch": round(0.9 * n)}


def _node(cfg: dict, dotted: str) -> dict | None:
    for key in dotted.split("."):
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, dict) else None


class _Filler:
    """Sets values the config leaves unset (missing or null) and records the rule for each."""

    def __init__(self, cfg: dict):
        self.cfg, self.rules = cfg, {}

    def fill(self, section: str, key: str, value, rule: str, force: bool = False) -> None:
        node = self.cfg if not section else _node(self.cfg, section)
        if node is not None and (force or node.get(key) is None):
            node[key] = value
            self.rules[f"{section}.{key}" if section else key] = rule


def resolve(cfg: dict, world_size: int = 1, config_path: str | Path | None = None, training: bool = True,
            explain: bool = False):
    """A run config validated and completed; `cfg` itself is not changed.

    Validates every section (unknown keys name the nearest known one, wrong types name the key and
    the expected type), then derives: the graph path relative to the config file, the epoch
    schedule from `epochs`, every size from `imgsz`, the per-process batch from `total_batch_size`
    over `world_size`, and lrs scaled by `scale_lr_with_batch`. With `explain`, also returns
    {dotted key: the rule that derived it}."""
    from data import check_loader
    from engine.distill import check_distill
    from engine.ema import EMAConfig
    from engine.optim import LRScaleConfig, LRSchedulerConfig, OptimizerConfig, WarmupConfig
    from models.criterion import check_criterion
    from models.postprocess import PostProcessor

    out = validate_section(RunConfig, copy.deepcopy(cfg), "").model_dump()
    # derive first: a value left null (~) means "derive it", which the sections' own checks would refuse
    filler = _Filler(out)
    _derive_graph_path(filler, config_path, training)
    _derive_schedule(filler)
    _derive_sizes(filler)
    for split in ("train_dataloader", "val_dataloader"):
        if out[split] is not None:
            out[split] = check_loader(out[split], split.split("_")[0])
        elif training or split == "val_dataloader":
            raise ConfigError(f"missing `{split}` section", where=split,
                              hint="include a dataset file (configs/data/) or write the section")
    if out["criterion"] is not None:
        out["criterion"] = check_criterion(out["criterion"])
    elif training:
        raise ConfigError("missing `criterion` section", where="criterion", hint="include a recipe (configs/recipes/)")
    out["postprocessor"] = {k: v for k, v in (out["postprocessor"] or {}).items() if k != "type"}
    check_call(PostProcessor, out["postprocessor"], "postprocessor", skip=("num_classes",))
    out["optimizer"] = validate_section(OptimizerConfig, out["optimizer"], "optimizer").model_dump(exclude_none=True)
    out["lr_scheduler"] = validate_section(LRSchedulerConfig, out["lr_scheduler"], "lr_scheduler").model_dump()
    if out["lr_warmup_scheduler"] is not None:
        out["lr_warmup_scheduler"] = validate_section(WarmupConfig, out["lr_warmup_scheduler"],
                                                      "lr_warmup_scheduler").model_dump()
    if out["scale_lr_with_batch"] is not None:
        out["scale_lr_with_batch"] = validate_section(LRScaleConfig, out["scale_lr_with_batch"],
                                                      "scale_lr_with_batch").model_dump()
    out["ema"] = validate_section(EMAConfig, out["ema"], "ema").model_dump()
    if out["distill"] is not None:
        out["distill"] = check_distill(out["distill"])
    _derive_batches(filler, world_size)
    return (out, filler.rules) if explain else out


def locate_graph(graph, config_path):
    """A graph path that is not a file from the current folder but is one beside the config file names
    that file (configs refer to graphs relative to themselves); failing that, a graphs/ or configs/ path
    names the checkout's file (checkout_file). Anything else is unchanged."""
    if not isinstance(graph, str) or Path(graph).is_file():
        return graph
    beside = Path(config_path).parent / graph if config_path is not None else None
    located = beside if beside is not None and beside.is_file() else checkout_file(graph)
    return os.path.normpath(located) if located is not None else graph


def _derive_graph_path(filler: _Filler, config_path, training: bool) -> None:
    located = locate_graph(filler.cfg["graph"], config_path)
    # Checked before the data is read; an evaluation builds the graph its checkpoint records, if any.
    if training and isinstance(located, str) and not Path(located).is_file():
        raise ConfigError(f"graph file not found: {located}", where=f"{config_path or 'config'}: graph",
                          hint=_graph_hint(located, config_path))
    if located != filler.cfg["graph"]:
        filler.fill("", "graph", located, "not in the current folder: beside the config file, or the checkout's",
                    force=True)


def _graph_hint(name: str, config_path) -> str:
    """The nearest graph file names in the folder the path names (here, or in the checkout)."""
    import difflib

    folder, config = Path(name).parent, Path(config_path).resolve() if config_path else None
    known = {p.name for base in (folder, CHECKOUT / folder) if base.is_dir() for p in base.glob("*.y*ml")
             if p.resolve() != config}
    close = difflib.get_close_matches(Path(name).name, sorted(known), n=3, cutoff=0.6)
    found = f"did you mean {', '.join(str(folder / c) for c in close)}? " if close else ""
    return found + "graph paths are read from the current folder, the config's folder, then the checkout's graphs/"


def _derive_schedule(filler: _Filler) -> None:
    cfg = filler.cfg
    epochs = cfg["epochs"]
    collate = "train_dataloader.collate_fn"
    policy = "train_dataloader.dataset.transforms.policy"
    if epochs < 2:  # a single epoch has no schedule: augment throughout, no stage 2
        filler.fill(policy, "epoch", 1, "epochs 1: the policy's ops run throughout")
        node = _node(cfg, collate)
        for key in ("stop_epoch", "mixup_epochs", "copyblend_epochs"):
            if node is not None and key in node and node[key] is None:
                del node[key]  # the collate's own defaults
        matcher = _node(cfg, "criterion.matcher")
        if matcher is not None and matcher.get("matcher_change_epoch", 0) is None:
            del matcher["matcher_change_epoch"]  # the matcher's own default
        return
    derived = derive_epochs(epochs, cfg["no_aug_epoch"])
    rule = f"from epochs {epochs} (engine.config.derive_epochs)"
    filler.fill("", "no_aug_epoch", derived["no_aug_epoch"], rule)
    filler.fill("", "flat_epoch", derived["flat_epoch"], rule)
    filler.fill(policy, "epoch", derived["policy_epoch"], rule)
    if _node(cfg, collate) is None and isinstance(cfg["train_dataloader"], dict):
        cfg["train_dataloader"]["collate_fn"] = {}
    for key in ("mixup_epochs", "copyblend_epochs", "stop_epoch"):
        filler.fill(collate, key, derived[key], rule)
    matcher = _node(cfg, "criterion.matcher")
    if matcher is not None and "matcher_change_epoch" in matcher:
        filler.fill("criterion.matcher", "matcher_change_epoch", derived["matcher_change_epoch"], rule)


def _derive_sizes(filler: _Filler) -> None:
    """The top-level `imgsz` drives every size: the train and eval Resize, the Mosaic tile (imgsz / 2,
    as the official 320 for 640), the collate's multi-scale base size and the RAM-cache size.
    Multi-scale draws squares, so a non-square imgsz turns it off."""
    cfg = filler.cfg
    if cfg["imgsz"] is None:
        return
    h, w = (cfg["imgsz"], cfg["imgsz"]) if isinstance(cfg["imgsz"], int) else cfg["imgsz"]
    rule = f"from imgsz {[h, w]}"
    for split in ("train_dataloader", "val_dataloader"):
        transforms = _node(cfg, f"{split}.dataset.transforms") or {}
        for i, op in enumerate(transforms.get("ops") or []):
            where = f"{split}.dataset.transforms.ops[{i}]"
            if not isinstance(op, dict):
                continue  # the transforms check reports it
            if op.get("type") == "Resize":
                op["size"] = [h, w]
                filler.rules[f"{where}.size"] = rule
            elif op.get("type") == "Mosaic":
                op["output_size"] = min(h, w) // 2
                filler.rules[f"{where}.output_size"] = rule + " (half the side)"
        if isinstance(cfg[split], dict) and cfg[split].get("ram_cache"):
            filler.fill(split, "cache_imgsz", max(h, w), rule)
    collate = _node(cfg, "train_dataloader.collate_fn")
    if collate is not None:
        filler.fill("train_dataloader.collate_fn", "base_size", h, rule, force=True)
        if h != w and collate.get("base_size_repeat") is not None:
            print(f"imgsz {h}x{w} is not square: multi-scale training is off")
            filler.fill("train_dataloader.collate_fn", "base_size_repeat", None, "imgsz not square", force=True)


def _derive_batches(filler: _Filler, world_size: int) -> None:
    cfg = filler.cfg
    for split in ("train_dataloader", "val_dataloader"):
        section = cfg[split]
        if section is None or section["total_batch_size"] is None:
            continue
        total = section["total_batch_size"]
        if total % world_size:
            raise ConfigError(f"total_batch_size {total} is not divisible by {world_size} processes",
                              where=f"{split}.total_batch_size", hint="make it a multiple of the process count")
        per_process = total // world_size
        if section["batch_size"] not in (None, per_process):
            raise ConfigError(f"{split}.batch_size {section['batch_size']} contradicts total_batch_size {total} over "
                              f"{world_size} process(es)", where=f"{split}.batch_size",
                              hint=f"set only {split}.total_batch_size (the official key)")
        filler.fill(split, "batch_size", per_process, f"total_batch_size {total} / {world_size} process(es)", force=True)
    rule = cfg["scale_lr_with_batch"]
    if rule is not None and cfg["train_dataloader"] is not None:
        total = (cfg["train_dataloader"]["batch_size"] or 1) * world_size
        factor = total / rule["base_batch_size"]
        text = f"x {factor:g} (total batch {total} / base_batch_size {rule['base_batch_size']})"
        optimizer = cfg["optimizer"]
        filler.fill("optimizer", "lr", optimizer["lr"] * factor, text, force=True)
        for i, group in enumerate(optimizer.get("params") or []):
            if group.get("lr") is not None:
                group["lr"] *= factor
                filler.rules[f"optimizer.params[{i}].lr"] = text
