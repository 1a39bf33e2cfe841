"""The official configs' vocabulary (D-FINE, DEIM, DEIMv2, RT-DETRv2, RT-DETRv4), mapped once onto ours.

A key that means something here is read under its official name and moved to our place, with one
printed line saying so (`epoches` -> `epochs`); a key that means nothing here stops with the place
where that setting now lives (the network is the graph file, so `HybridEncoder.hidden_dim` is an
argument of the graph's HybridEncoder row). Applied to every config file before it merges and to
every `-u` override, so both spellings compose in the order they were written.
"""
from __future__ import annotations

from core.errors import ConfigError

# official dotted key -> our dotted key (same value)
RENAMES = {
    "epoches": "epochs",
    "num_classes": "nc",
    "eval_spatial_size": "imgsz",
    "lr_gamma": "lr_scheduler.lr_gamma",
    "warmup_iter": "lr_scheduler.warmup_iter",
    "use_focal_loss": "postprocessor.use_focal_loss",
}
# official dotted key -> (our dotted key, {official value: ours})
VALUE_RENAMES = {
    "lrsheduler": ("lr_scheduler.type", {"flatcosine": "FlatCosine", "FlatCosine": "FlatCosine"}),
}
# official keys with no effect here, and why (read, reported, dropped)
NO_EFFECT = {
    "task": "detection is the only task",
    "evaluator": "evaluation is COCO bbox AP plus the extra metrics, always",
    "scaler": "the GradScaler follows use_amp (fp16 only)",
    "model": "the network is the graph file (`graph:`)",
    "train_dataloader.dataset.return_masks": "boxes only",
    "val_dataloader.dataset.return_masks": "boxes only",
}
# the official per-class sections of the network: their settings are rows of our graph files
NETWORK_SECTIONS = {
    "DEIM", "DFINE", "RTDETR", "DEIMv2", "RTv4", "HGNetv2", "PResNet", "TimmModel", "DINOv3STAs",
    "HybridEncoder", "LiteEncoder", "DFINETransformer", "DEIMTransformer", "RTDETRTransformerv2",
    "RTDETRTransformer",
}
# official `<key>: Name` + top-level `Name: {...}` pairs that are one section here
NAMED_SECTIONS = ("criterion", "postprocessor")
# the official flag that makes both splits use the 80 COCO ids
COCO_REMAP = "remap_mscoco_category"
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
        node = node.setdefault(key, {})
    node[last] = value


def translate(spec: dict, where: str, say=print) -> dict:
    """`spec` (one config file's mapping, before it merges) in our vocabulary, in place."""
    for official, ours in RENAMES.items():
        value, found = _pop_dotted(spec, official)
        if found:
            _set_dotted(spec, ours, value)
            say(f"{where}: official key `{official}` read as `{ours}`")
    for official, (ours, values) in VALUE_RENAMES.items():
        value, found = _pop_dotted(spec, official)
        if found:
            if value not in values:
                raise ConfigError(f"`{official}: {value}` has no counterpart here", where=f"{where}: {official}",
                                  hint=f"set `{ours}` to one of {sorted(set(values.values()))}")
            _set_dotted(spec, ours, values[value])
            say(f"{where}: official key `{official}: {value}` read as `{ours}: {values[value]}`")
    for official, why in NO_EFFECT.items():
        value, found = _pop_dotted(spec, official)
        if found:
            say(f"{where}: official key `{official}` has no effect here ({why})")
    for section in NAMED_SECTIONS:
        name = spec.get(section)
        if isinstance(name, str):
            body = spec.pop(name, None) if isinstance(spec.get(name), dict) else {}
            spec[section] = {"type": name, **body}
            say(f"{where}: official `{section}: {name}` with its `{name}:` section read as `{section}: {{type: {name}, ...}}`")
    if "teacher_model" in spec:
        _teacher_model(spec, where, say)
    if COCO_REMAP in spec:
        value = spec.pop(COCO_REMAP)
        for split in ("train_dataloader", "val_dataloader"):
            _set_dotted(spec, f"{split}.dataset.{COCO_REMAP}", value)
        say(f"{where}: official key `{COCO_REMAP}` read as `train_dataloader/val_dataloader.dataset.{COCO_REMAP}`")
    for name in sorted(NETWORK_SECTIONS & set(spec)):
        body = spec.pop(name)
        keys = sorted(body) if isinstance(body, dict) else []
        if set(keys) <= {"pretrained", "local_model_dir"} and not (isinstance(body, dict) and body.get("pretrained")):
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


def translate_key(dotted: str, where: str, say=print) -> tuple[str, object]:
    """An override's dotted key in our vocabulary, and a value map (None for no mapping)."""
    if dotted in RENAMES:
        say(f"{where}: official key `{dotted}` read as `{RENAMES[dotted]}`")
        return RENAMES[dotted], None
    if dotted in VALUE_RENAMES:
        ours, values = VALUE_RENAMES[dotted]
        say(f"{where}: official key `{dotted}` read as `{ours}`")
        return ours, values
    head, _, rest = dotted.partition(".")
    if head == "teacher_model":
        if rest not in TEACHER_MODEL:
            raise ConfigError(f"official key `{dotted}` has no counterpart here", where=where,
                              hint="set distill.foundation.{model, weights, mean, std} (engine/distill.py)")
        say(f"{where}: official key `{dotted}` read as `distill.foundation.{TEACHER_MODEL[rest]}`")
        return f"distill.foundation.{TEACHER_MODEL[rest]}", None
    if head in NETWORK_SECTIONS:
        raise ConfigError(f"official network key `{dotted}` has no effect here", where=where,
                          hint=f"the network is the graph file: set it as an argument of the graph's {head} row")
    return dotted, None
