"""The official configs' vocabulary (D-FINE, DEIM, DEIMv2, RT-DETRv2, RT-DETRv4), mapped once onto ours.

A key that means something here is read under its official name and moved to our place, with one
printed line saying so (`epoches` -> `epochs`); a key that means nothing here stops with the place
where that setting now lives (the network is the graph file, so `HybridEncoder.hidden_dim` is an
argument of the graph's HybridEncoder row). Applied to every config file before it merges and to
every `-u` override (as the one-key mapping it writes), so both spellings compose in the order they
were written. Keys whose official name is ours too (`optimizer`, `ema`, `train_dataloader.type:
DataLoader`, `transforms.type: Compose`, ...) need no entry: the sections' schemas accept them.
"""
from __future__ import annotations

from collections import Counter

from core.errors import ConfigError

# official dotted key -> our dotted keys (same value)
RENAMES = {
    "epoches": ("epochs",),
    "num_classes": ("nc",),
    "eval_spatial_size": ("imgsz",),
    "lr_gamma": ("lr_scheduler.lr_gamma",),
    "warmup_iter": ("lr_scheduler.warmup_iter",),
    # shared into the postprocessor (sigmoid top-k) and the matcher (focal class cost) officially
    "use_focal_loss": ("postprocessor.use_focal_loss", "criterion.matcher.use_focal_loss"),
}
# official keys with no effect here, and why (read, reported, dropped)
NO_EFFECT = {
    "task": "detection is the only task",
    "evaluator": "evaluation is COCO bbox AP plus the extra metrics, always",
    "scaler": "the GradScaler follows use_amp (fp16 only)",
    "model": "the network is the graph file (`graph:`)",
    "train_dataloader.dataset.return_masks": "boxes only",
    "val_dataloader.dataset.return_masks": "boxes only",
    "train_dataloader.collate_fn.ema_restart_decay": "as in the official trainers, whose ModelEMA keeps its first "
                                                     "decay: stage 2 reloads best_stg1.pth, the decay is `ema.decay`",
    "project_name": "Weights & Biases naming; runs log to TensorBoard (summary_dir) and log.txt",
    "exp_name": "Weights & Biases naming; runs log to TensorBoard (summary_dir) and log.txt",
    "ema_decay": "the official BaseConfig declares it and reads it nowhere; the `ema:` section counts",
    "ema_warmups": "the official BaseConfig declares it and reads it nowhere; the `ema:` section counts",
    "print_method": "printing is this trainer's own",
    "print_rank": "every rank but the first is quiet",
    "local_rank": "torchrun sets LOCAL_RANK",
}
# official keys that mean nothing here: where the setting lives instead
MOVED = {
    "config": "give the run config with -c",
    "resume": "resume with -r CHECKPOINT on the command line",
    "tuning": "fine-tune with -t CHECKPOINT on the command line",
    "test_only": "evaluate with --test-only on the command line",
}
# the official per-class sections of the network: their settings are rows of our graph files
NETWORK_SECTIONS = {
    "DEIM", "DFINE", "RTDETR", "DEIMv2", "RTv4", "HGNetv2", "PResNet", "TimmModel", "DINOv3STAs",
    "HybridEncoder", "LiteEncoder", "DFINETransformer", "DEIMTransformer", "RTDETRTransformerv2",
    "RTDETRTransformer",
}
# a network section's keys that say only where pretrained weights come from (nothing is downloaded)
_WEIGHT_SOURCE_KEYS = {"pretrained", "local_model_dir"}
# official `<key>: Name` + top-level `Name: {...}`: one section here. The settings section may sit in
# another file than the name (the official layout), so known names are read wherever they appear.
NAMED_SECTIONS = {
    "criterion": {"DFINECriterion", "DEIMCriterion", "DEIMv2Criterion", "RTDETRCriterionv2", "RTv4Criterion",
                  "RTDETRv4Criterion"},
    "postprocessor": {"DFINEPostProcessor", "PostProcessor", "RTDETRPostProcessor"},
}
# the official flag that makes both splits use the 80 COCO ids
COCO_REMAP = "remap_mscoco_category"
SCALES = "train_dataloader.collate_fn.scales"
# RT-DETRv4's `teacher_model:` section (DINOv3TeacherModel) is our `distill.foundation`: key -> ours (None: no
# effect here, and why). The ViT is built here from the weights file, so the torch.hub repo is not needed.
TEACHER_MODEL = {"dinov3_model_type": "model", "dinov3_weights_path": "weights", "mean": "mean", "std": "std"}
TEACHER_NO_EFFECT = {"dinov3_repo_path": "the ViT is built here, not through torch.hub",
                     "patch_size": "the model's own patch size is used"}


def _pop_dotted(spec: dict, dotted: str):
    node = spec
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return None, False
    if last not in node:
        return None, False
    return node.pop(last), True


def _set_dotted(spec: dict, dotted: str, value) -> None:
    node = spec
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def scales_as_base_size(scales, where: str) -> dict:
    """RT-DETRv2's explicit multi-scale list as our `base_size` / `base_size_repeat` (data.collate's
    rule: multiples of 32 from 0.75x to 1.25x the base, the base repeated); `~` is no multi-scale."""
    from data.collate import generate_scales

    if scales is None:
        return {"base_size_repeat": None}
    if not isinstance(scales, list) or not scales or not all(isinstance(s, int) for s in scales):
        raise ConfigError(f"`scales: {scales}` is not a list of sizes", where=where, hint="e.g. [480, 512, ..., 800]")
    base, repeat = Counter(scales).most_common(1)[0]
    if sorted(generate_scales(base, repeat)) != sorted(scales):
        raise ConfigError(f"`scales: {scales}` is not a multi-scale list of this trainer", where=where,
                          hint="sizes here are multiples of 32 from 0.75x to 1.25x a base size drawn `repeat` times: "
                               "set train_dataloader.collate_fn.base_size and base_size_repeat")
    return {"base_size": base, "base_size_repeat": repeat}


def translate(spec: dict, where: str, say=print) -> dict:
    """`spec` (one config file's mapping, or one `-u` override's, before it merges) in our
    vocabulary, in place."""
    # first: the renames below may write into these sections
    for section, names in NAMED_SECTIONS.items():
        name = spec.get(section)
        if isinstance(name, str):
            spec[section] = {"type": name}
            say(f"{where}: official `{section}: {name}` read as `{section}.type: {name}`")
        for name in sorted(names & set(spec)):
            body = spec.pop(name)
            if not isinstance(body, dict):
                raise ConfigError(f"`{name}` must be a mapping of its settings", where=f"{where}: {name}")
            current = spec.get(section)
            spec[section] = {**(current if isinstance(current, dict) else {}), **body}
            say(f"{where}: official section `{name}:` read as `{section}:`")
    for official, ours in RENAMES.items():
        value, found = _pop_dotted(spec, official)
        if found:
            for key in ours:
                _set_dotted(spec, key, value)
            say(f"{where}: official key `{official}` read as `{'`, `'.join(ours)}`")
    value, found = _pop_dotted(spec, "lrsheduler")
    if found and value is None:
        say(f"{where}: official key `lrsheduler: ~` has no effect here (lr_scheduler as written)")
    elif found:  # officially any value selects flat-cosine; the name is only printed
        _set_dotted(spec, "lr_scheduler.type", "FlatCosine")
        say(f"{where}: official key `lrsheduler: {value}` read as `lr_scheduler.type: FlatCosine`")
    value, found = _pop_dotted(spec, SCALES)
    if found:
        base = scales_as_base_size(value, f"{where}: {SCALES}")
        for key, size in base.items():
            _set_dotted(spec, f"train_dataloader.collate_fn.{key}", size)
        say(f"{where}: official key `{SCALES.split('.', 1)[1]}: {value}` read as "
            + ", ".join(f"`collate_fn.{k}: {'~' if v is None else v}`" for k, v in base.items()))
    for official, why in NO_EFFECT.items():
        value, found = _pop_dotted(spec, official)
        if found:
            say(f"{where}: official key `{official}` has no effect here ({why})")
    if "use_wandb" in spec:
        if spec.pop("use_wandb"):
            raise ConfigError("`use_wandb: true`: there is no Weights & Biases logging here", where=f"{where}: use_wandb",
                              hint="runs log to TensorBoard (summary_dir, default OUTPUT_DIR/summary) and log.txt; "
                                   "drop use_wandb")
        say(f"{where}: official key `use_wandb: false` has no effect here")
    if "teacher_model" in spec:
        _teacher_model(spec, where, say)
    for official, hint in MOVED.items():
        if official in spec:
            raise ConfigError(f"official key `{official}` has no counterpart in a run config here", where=f"{where}: {official}",
                              hint=hint)
    if COCO_REMAP in spec:
        value = spec.pop(COCO_REMAP)
        for split in ("train_dataloader", "val_dataloader"):
            _set_dotted(spec, f"{split}.dataset.{COCO_REMAP}", value)
        say(f"{where}: official key `{COCO_REMAP}` read as `train_dataloader/val_dataloader.dataset.{COCO_REMAP}`")
    for name in sorted(NETWORK_SECTIONS & set(spec)):
        body = spec.pop(name)
        keys = sorted(body) if isinstance(body, dict) else []
        if set(keys) <= _WEIGHT_SOURCE_KEYS and not (isinstance(body, dict) and body.get("pretrained")):
            say(f"{where}: official `{name}: {body}` has no effect here (nothing is downloaded)")
            continue
        raise ConfigError(f"official network section `{name}` ({', '.join(keys) or 'empty'}) has no effect here",
                          where=f"{where}: {name}",
                          hint="the network is the graph file (`graph:`): set these as arguments of its "
                               f"{name} row; pretrained backbone weights load from a local file given as the row's "
                               "`pretrained: PATH` (HGNetv2/HGStage) or `weights: PATH`")
    return spec


def _teacher_model(spec: dict, where: str, say) -> None:
    """The official `teacher_model:` as `distill.foundation` (only the foundation teacher: kd_loss_type none
    unless this file says otherwise)."""
    body = spec.pop("teacher_model")
    body = dict(body) if isinstance(body, dict) else {}
    kind = body.pop("type", "DINOv3TeacherModel")
    if kind != "DINOv3TeacherModel":
        raise ConfigError(f"official `teacher_model: {{type: {kind}}}` has no counterpart here", where=f"{where}: teacher_model",
                          hint="set distill.foundation.model to a timm model of that family and "
                               "distill.foundation.weights to its weights file (engine/distill.py)")
    foundation = {"model": "dinov3_vitb16"}  # the official Python default of dinov3_model_type
    for key, value in body.items():
        if key in TEACHER_NO_EFFECT:
            say(f"{where}: official key `teacher_model.{key}` has no effect here ({TEACHER_NO_EFFECT[key]})")
        elif key in TEACHER_MODEL:
            foundation[TEACHER_MODEL[key]] = value
        else:
            raise ConfigError(f"unknown key {key!r} of the official teacher_model", where=f"{where}: teacher_model.{key}",
                              hint=f"DINOv3TeacherModel takes {', '.join([*TEACHER_MODEL, *TEACHER_NO_EFFECT])}")
    distill = spec.setdefault("distill", {})
    if not isinstance(distill, dict):
        raise ConfigError("`distill` must be a mapping", where=f"{where}: distill")
    distill.setdefault("kd_loss_type", "none")
    distill["foundation"] = {**foundation, **(distill.get("foundation") or {})}
    say(f"{where}: official `teacher_model` (DINOv3TeacherModel) read as `distill.foundation` "
        f"({', '.join(f'{k}: {v}' for k, v in foundation.items())})")

