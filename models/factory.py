"""The one model factory: every caller (trainer, distillation teacher, predict, export, ablate, the
analysis commands) builds its detector here.

    build_detector(cfg)            -> Detector, criterion (None without `criterion:`), PostProcessor
    load_detector(ckpt, cfg, dev)  -> Detector with the checkpoint's weights, PostProcessor, meta

`cfg` is a run config (resolved or not): `graph` (a path or the graph itself), `scale`, `imgsz`, `nc`,
`criterion`, `postprocessor`. A checkpoint written by train.py carries its graph, class count, size and
category mapping in `meta`, so it rebuilds without the config's graph; official releases convert.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.checkpoint_io import model_weights, read_checkpoint
from core.errors import CheckpointError, ConfigError
from core.yaml_io import load_yaml
from models import build_model
from models.criterion import build_criterion
from models.postprocess import build_postprocessor


def build_detector(cfg: dict, nc: int | None = None, with_criterion: bool = True, check: bool = False):
    """(model, criterion or None, postprocessor) from a run config; `nc` overrides the config's."""
    graph = cfg.get("graph")
    if not graph:
        raise ConfigError("missing `graph` (the model's graph YAML, or the graph itself as a mapping)",
                          where="graph", hint="e.g. graph: graphs/deim/deim-n.yaml")
    nc = nc if nc is not None else cfg.get("nc")
    model = build_model(graph, nc=nc, scale=cfg.get("scale"), imgsz=cfg.get("imgsz"), check=check)
    criterion = None
    if with_criterion and cfg.get("criterion"):
        criterion = build_criterion({**cfg["criterion"], "num_classes": model.nc})
    postprocessor = build_postprocessor(cfg.get("postprocessor"), model.nc)
    return model, criterion, postprocessor


def load_detector(checkpoint: str | Path, cfg: dict | None = None, device: torch.device | str = "cpu",
                  quiet: bool = False):
    """(model in eval mode with the checkpoint's weights (EMA first), postprocessor, meta).

    The graph comes from the checkpoint's meta (what it was trained with), else from `cfg`; a config
    graph or scale that is then not used is named in a printed note unless `quiet`."""
    cfg = cfg or {}
    state = read_checkpoint(checkpoint)
    meta = state.get("meta") if isinstance(state.get("meta"), dict) else {}
    other = unused_graph(meta, cfg)
    if other and not quiet:
        print(f"note: built from the graph {checkpoint} records, which its weights were trained with; the "
              f"config's {other} differs and is not used")
    weights, _ = model_weights(state)
    graph = meta.get("graph_spec") or cfg.get("graph")
    if not graph:
        raise ConfigError(f"no graph to build: {checkpoint} stores none and the config has no `graph`",
                          where="graph", hint="pass the run config the checkpoint was trained with (-c)")
    model = build_model(graph, nc=meta.get("nc") or cfg.get("nc"), scale=meta.get("scale") or cfg.get("scale"),
                        imgsz=meta.get("imgsz") or cfg.get("imgsz"), check=False)
    load_weights(model, weights, checkpoint)
    postprocessor = build_postprocessor(cfg.get("postprocessor"), model.nc)
    device = torch.device(device)
    return model.to(device).eval(), postprocessor.to(device).eval(), meta


def unused_graph(meta: dict, cfg: dict) -> str | None:
    """A checkpoint of ours is built from the graph it records (its weights fit no other). When the
    config names another graph or scale, which is then not used, what it names; else None."""
    stored, given = meta.get("graph_spec"), cfg.get("graph")
    if not stored or not given:
        return None
    try:
        spec = given if isinstance(given, dict) else load_yaml(given, error=ConfigError)
    except ConfigError:  # the checkpoint's graph is what is built, so an unreadable config graph is only named
        return f"graph {given} (unreadable)"
    scale, stored_scale = cfg.get("scale"), meta.get("scale")
    scale_differs = scale is not None and scale != stored_scale
    if spec == stored and not scale_differs:
        return None
    named = "graph" if isinstance(given, dict) else f"graph {given}"
    return named + (f" (scale {scale}; the checkpoint's {stored_scale})" if scale_differs else "")


def load_weights(model: nn.Module, weights: dict, source) -> str | None:
    """Load `weights` exactly (official layouts converted first); return the conversion report.
    A checkpoint that does not fit names its first differing tensors."""
    from models.convert import convert_if_official

    weights, report = convert_if_official(weights, model)
    mismatch = describe_mismatch(model, weights)
    if mismatch:
        raise CheckpointError(f"{source} does not fit this model: {mismatch}", where=str(source),
                              hint="pass the config the checkpoint was trained with; to fine-tune other weights "
                                   "use train.py -t")
    model.load_state_dict(weights)
    return report


def fits(own: torch.Tensor, value) -> bool:
    """Whether a checkpoint tensor can load into a model tensor: same shape, and no integers or booleans
    for floats (those are a broken file, which load_state_dict would silently cast)."""
    return (isinstance(value, torch.Tensor) and own.shape == value.shape
            and (value.is_floating_point() or not own.is_floating_point()))


def describe_mismatch(model: nn.Module, weights: dict) -> str | None:
    """None when `weights` fit `model` exactly; else the first differences, by tensor name."""
    own = model.state_dict()
    shapes = [f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}"
              for k, v in weights.items() if k in own and own[k].shape != v.shape]
    dtypes = [f"{k}: checkpoint {v.dtype} vs model {own[k].dtype}"
              for k, v in weights.items() if k in own and own[k].shape == v.shape and not fits(own[k], v)]
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    parts = ([f"{len(shapes)} tensors of another shape, e.g. {shapes[0]}"] if shapes else []) + \
            ([f"{len(dtypes)} integer tensors where the model has floats, e.g. {dtypes[0]}"] if dtypes else []) + \
            ([f"{len(missing)} model tensors missing, e.g. {missing[0]}"] if missing else []) + \
            ([f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}"] if unexpected else [])
    return "; ".join(parts) or None
