"""Graph YAML -> list of built layers.

A graph is three sections of rows, `[from, repeats, module, args]`, with one global layer index
across `backbone`, `encoder` and `decoder` (as in Ultralytics). `from` is -1 (previous row), a row
index, a negative offset, or a list of those. Module names resolve through the block registry, or
as `nn.Name` through torch.nn; nothing is ever evaluated.

`args` is a list (positional), a dict (keyword) or `[list, dict]`. A dict with a `module` key is a
nested block and arrives in the constructor as a factory (a `functools.partial`), so a wrapper can
build any mixer with the channels it chooses.

Graph-level values reach constructors by parameter name, unless the row sets them:
`num_classes` <- the graph's `nc`; `eval_spatial_size` <- the graph's `imgsz`.

Every mistake raises GraphError naming the file, the row and the module.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from blocks import registry
from blocks.registry import BlockSpec, ChannelError, UnknownBlockError
from core.errors import DetrZooError, GraphError
from core.schema import MAX_IMGSZ, type_error
from core.yaml_io import load_yaml

SECTIONS = ("backbone", "encoder", "decoder")
MAX_REPEATS = 64
DEFAULT_IMGSZ = (640, 640)


@dataclass
class Row:
    """One resolved graph row, as the layer table shows it."""
    index: int
    from_repr: Any              # `from` as written in the graph
    sources: list[int]          # absolute indices; -1 = the input image
    multi_input: bool           # `from` was a list
    repeats: int
    module: str
    args: list
    kwargs: dict
    c_out: Any
    section: str
    takes_targets: bool = False
    takes_pixel_mask: bool = False   # forward(x, pixel_mask=...): padded batches (Deformable DETR)


@dataclass
class Graph:
    """A parsed graph: its rows and the modules built from them."""
    path: str
    nc: int | None
    scale: str | None
    imgsz: tuple[int, int]
    rows: list[Row]
    layers: list[nn.Module]
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def save(self) -> set[int]:
        """Outputs that a later row reads (the Ultralytics save list)."""
        return {s for row in self.rows for s in row.sources
                if s >= 0 and (row.multi_input or s != row.index - 1)}


def parse(graph: str | Path | dict, nc: int | None = None, scale: str | None = None,
          imgsz: tuple[int, int] | int | None = None) -> Graph:
    """Read a graph (a path or an already-loaded dict) and build every row's module."""
    path = str(graph) if not isinstance(graph, dict) else "<dict>"
    spec = load_yaml(graph, error=GraphError) if not isinstance(graph, dict) else graph
    if not isinstance(spec, dict):
        raise GraphError("a graph file must be a mapping with backbone/encoder/decoder sections", where=path,
                         hint="see graphs/examples/tiny.yaml")
    depth, width, max_channels, scale = _resolve_scale(spec, path, scale)
    nc = _resolve_nc(spec, path, nc)
    imgsz = check_imgsz(spec.get("imgsz") if imgsz is None else imgsz, path)

    if "backbone" not in spec:
        raise GraphError("missing section 'backbone'", where=path,
                         hint="a graph needs a `backbone:` list of rows; `encoder:` and `decoder:` may follow")
    unknown = set(spec) - set(SECTIONS) - {"nc", "scales", "imgsz", "names", "scale"}
    if unknown:
        raise GraphError(f"unknown top-level keys {sorted(unknown)}", where=path,
                         hint=f"allowed: nc, scales, imgsz, {', '.join(SECTIONS)}")

    context = {"num_classes": nc, "eval_spatial_size": list(imgsz)}
    rows, layers, channels = [], [], []
    for section in SECTIONS:
        section_rows = spec.get(section)
        if section_rows is None:
            continue
        if not isinstance(section_rows, list) or not section_rows:
            raise GraphError(f"section '{section}' must be a non-empty list of rows", where=path,
                             hint="write each row as `- [from, repeats, module, args]`")
        for raw in section_rows:
            index = len(rows)
            where = f"{path}, row {index} ({section})"
            try:
                row, module = _build_row(raw, index, section, channels, depth, width, max_channels, context, where)
            except GraphError:
                raise
            except DetrZooError as err:
                raise GraphError(err.message, hint=err.hint, where=where) from None
            rows.append(row)
            layers.append(module)
            channels.append(row.c_out)
    for row in rows[:-1]:
        if row.takes_targets:
            raise GraphError(f"decoder {row.module} must be the last row", where=f"{path}, row {row.index}",
                             hint="move the DETR decoder to the end of the `decoder:` section")
    return Graph(path, nc, scale, imgsz, rows, layers, spec)


def _resolve_scale(spec, path, scale):
    scales = spec.get("scales")
    if not scales:
        if scale:
            raise GraphError(f"scale {scale!r} requested but the graph has no `scales:`", where=path,
                             hint="drop --scale, or add a `scales:` table to the graph")
        return 1.0, 1.0, float("inf"), None
    if not isinstance(scales, dict):
        raise GraphError("`scales:` must map a name to [depth, width, max_channels]", where=path)
    if scale is None:
        suffix = re.search(r"-([a-z0-9+]+)$", Path(path).stem)
        scale = suffix.group(1) if suffix and suffix.group(1) in scales else spec.get("scale") or next(iter(scales))
    if scale not in scales:
        raise GraphError(f"unknown scale {scale!r}", where=path, hint=f"choose one of {', '.join(map(str, scales))}")
    values = scales[scale]
    if not (isinstance(values, list) and len(values) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise GraphError(f"scale {scale!r} must be [depth, width, max_channels], got {values!r}", where=f"{path}: scales",
                         hint="three numbers, e.g. `n: [0.33, 0.25, 1024]`")
    if not all(v > 0 for v in values):
        raise GraphError(f"scale {scale!r} must have a positive depth, width and max_channels, got {values!r}",
                         where=f"{path}: scales", hint="e.g. `n: [0.33, 0.25, 1024]` (depth and width are factors)")
    return float(values[0]), float(values[1]), values[2], scale


def _resolve_nc(spec, path, nc):
    # the graph's own nc is checked even when the caller's (the dataset's) replaces it: a typo there
    # would otherwise wait for the day the graph is built without a dataset
    for value in (spec.get("nc"), nc):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise GraphError(f"nc must be a positive integer, got {value!r}", where=f"{path}: nc",
                             hint="set `nc:` to the number of classes (the dataset may override it)")
    return spec.get("nc") if nc is None else nc


def check_imgsz(imgsz, path):
    """`imgsz` as (height, width): an int or a pair of positive multiples of 32 (DEFAULT_IMGSZ for None)."""
    if imgsz is None:
        return DEFAULT_IMGSZ
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    if not (isinstance(imgsz, (list, tuple)) and len(imgsz) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMGSZ for v in imgsz)):
        raise GraphError(f"imgsz must be an int or [height, width] of positive sides up to {MAX_IMGSZ}, got {imgsz!r}",
                         where=f"{path}: imgsz", hint="e.g. 640, or [384, 640] (multiples of 32)")
    if any(v % 32 for v in imgsz):
        raise GraphError(f"imgsz {list(imgsz)} must be divisible by 32", where=f"{path}: imgsz",
                         hint="use a multiple of 32, e.g. 640 or 320")
    return tuple(imgsz)


def _split_args(args, where):
    if args is None:
        return [], {}
    if isinstance(args, dict):
        return [], dict(args)
    if isinstance(args, list):
        if len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], dict):
            return list(args[0]), dict(args[1])
        return list(args), {}
    raise GraphError(f"args must be a list, a dict or [list, dict], got {type(args).__name__}", where=where,
                     hint="e.g. `[16, 3, 2]` (positional) or `{c2: 16, k: 3}` (keyword)")


def _resolve_module(name, where) -> BlockSpec:
    if not isinstance(name, str) or not name:
        raise GraphError(f"module must be a block name, got {name!r}", where=where,
                         hint="run `python -m blocks list` for the names")
    if name.startswith("nn."):
        return _torch_nn_spec(name, where)
    try:
        return registry.get(name)
    except UnknownBlockError as err:
        raise GraphError(err.message, hint=err.hint, where=where) from None


def _torch_nn_spec(name, where) -> BlockSpec:
    """A spec for a torch.nn class, with its channel rule read from its parameter names."""
    cls = getattr(nn, name[3:], None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise GraphError(f"torch.nn has no module {name[3:]!r}", where=where,
                         hint="check the spelling against torch.nn (e.g. nn.Upsample, nn.Identity)")
    params = list(inspect.signature(cls).parameters)
    first = params[0] if params else None
    if first in ("in_channels", "in_features"):
        return BlockSpec(name, cls, "nn", "arg0", True, {})
    if first in ("num_features", "num_channels", "normalized_shape"):
        return BlockSpec(name, cls, "nn", "same", True, {})
    if first == "num_groups":  # GroupNorm(num_groups, num_channels): channels are the 2nd parameter
        return BlockSpec(name, cls, "nn", "same", False, {})
    return BlockSpec(name, cls, "nn", "same", False, {})


def _nested(value, where):
    """Turn `{module: Name, args: {...}}` (at any depth) into a factory; leave other values alone."""
    if isinstance(value, dict) and "module" in value:
        extra = set(value) - {"module", "args"}
        if extra:
            raise GraphError(f"nested block keys {sorted(extra)} not understood", where=where,
                             hint="write a nested block as {module: Name, args: {...}}")
        spec = _resolve_module(value["module"], f"{where}, nested module")
        args, kwargs = _split_args(value.get("args"), where)
        args = [_nested(a, where) for a in args]
        kwargs = {k: _nested(v, where) for k, v in kwargs.items()}
        factory = functools.partial(spec.cls, *args, **kwargs)
        factory.block_name = spec.name
        return factory
    if isinstance(value, list):
        return [_nested(v, where) for v in value]
    return value


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def _build_row(raw, index, section, channels, depth, width, max_channels, context, where):
    if not isinstance(raw, list) or len(raw) != 4:
        raise GraphError(f"a row must be [from, repeats, module, args], got {raw!r}", where=where,
                         hint="write 4 fields, e.g. `- [-1, 1, Conv, [64, 3, 2]]`")
    source, repeats, name, args = raw
    where = f"{where} {name}" if isinstance(name, str) else where
    sources, multi = _resolve_from(source, index, where)
    c_in = [channels[s] if s >= 0 else 3 for s in sources]
    c_in = c_in if multi else c_in[0]

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise GraphError(f"repeats must be a positive integer, got {repeats!r}", where=where,
                         hint="the row's 2nd field: 1 for one block, n for n stacked copies")
    if repeats > MAX_REPEATS:
        raise GraphError(f"repeats {repeats} exceeds the limit of {MAX_REPEATS}", where=where,
                         hint="a typo? deep stacks belong in a block's own depth argument")
    repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats

    spec = _resolve_module(name, where)
    nested = [s for s, c in zip(sources, c_in) if isinstance(c, list)] if multi else []
    if nested:   # a row that returns several maps, listed beside others: which of its maps is meant?
        raise GraphError(f"row {nested[0]} returns {len(channels[nested[0]])} maps, and `from` lists it beside other "
                         f"rows {source}", where=where,
                         hint=f"pick one of its maps with an Index row (e.g. `- [{nested[0]}, 1, Index, [0]]`) and "
                              "list that row instead")
    if isinstance(c_in, list) and spec.takes_c_in and not spec.multi_input:
        given = f"`from` lists {len(sources)} rows {source}" if multi else f"row {sources[0]} outputs {len(c_in)} maps"
        raise GraphError(f"{spec.name} reads one map, but {given}", where=where,
                         hint="give it one map: one row (e.g. -1), an Index row picking one output, or a Concat/Add "
                              "row joining them")
    # (a block that takes no input channels, Index, reads its single row's outputs through its channel rule)
    if spec.multi_input and spec.takes_c_in and spec.channels not in ("sum", "first") and not isinstance(c_in, list) \
            and 1 not in spec.extra.get("inputs", ()):
        raise GraphError(f"{spec.name} fuses several maps, but `from` is the single row {source!r}", where=where,
                         hint="list the rows it fuses in `from`, e.g. [-1, 4]")
    accepted = spec.extra.get("inputs")
    if accepted is not None and (len(c_in) if isinstance(c_in, list) else 1) not in accepted:
        counts = " or ".join(map(str, accepted))
        raise GraphError(f"{spec.name} reads {counts} maps, but `from` is {source!r}", where=where,
                         hint=f"list {counts} rows in `from`")
    args, kwargs = _split_args(args, where)
    args = [_nested(a, where) for a in args]
    kwargs = {k: _nested(v, where) for k, v in kwargs.items()}
    signature = inspect.signature(spec.cls)
    _check_keywords(spec, signature, kwargs, where)
    call_args = [c_in, *args] if spec.takes_c_in else args
    try:
        bound = signature.bind(*call_args, **kwargs)
    except TypeError as err:
        accepted = [p for p in signature.parameters if p != spec.c_in_param]
        raise GraphError(f"wrong arguments for {spec.name}: {err}", where=where,
                         hint=f"{spec.name} takes ({', '.join(accepted)})"
                              + (" — the input channels are filled in from `from`" if spec.takes_c_in else "")) from None
    for param, value in bound.arguments.items():  # the row's own values, against the constructor's types
        problem = None if param == spec.c_in_param or callable(value) else type_error(spec.cls, param, value)
        if problem:
            raise GraphError(problem, where=where, hint=f"{spec.name} takes ({', '.join(signature.parameters)})")
    for param, value in context.items():
        if param in signature.parameters and param not in bound.arguments and value is not None:
            bound.arguments[param] = value
    if spec.repeat_arg:
        bound.arguments[spec.repeat_arg] = repeats
    if spec.out_param and width != 1.0:
        c2 = bound.arguments.get(spec.out_param)
        if isinstance(c2, int) and c2 != context["num_classes"]:
            bound.arguments[spec.out_param] = _make_divisible(min(c2, max_channels) * width, 8)
    defaults = dict(bound.arguments)
    bound.apply_defaults()
    try:
        c_out = spec.out_channels(c_in, dict(bound.arguments))
    except ChannelError as err:
        raise GraphError(f"channel mismatch: {err.message} (inputs from rows {sources})", where=where,
                         hint=err.hint) from None
    except DetrZooError:
        raise
    except Exception as err:  # noqa: BLE001 (a block's channel rule applied to args of the wrong kind)
        raise GraphError(f"{spec.name}'s output channels cannot follow from its args: {type(err).__name__}: {err}",
                         where=where, hint=f"check the row's args against {spec.name}'s parameters "
                                           f"({', '.join(signature.parameters)})") from err
    if not _valid_channels(c_out):
        raise GraphError(f"{spec.name} would output {c_out!r} channels; channels must be positive integers",
                         where=where, hint=f"check the channel argument(s) of {spec.name} in this row")
    module = _construct(spec, bound, repeats, c_out, where)
    shown_args = [v for k, v in defaults.items() if k != spec.c_in_param]
    parameters = inspect.signature(module.forward).parameters
    row = Row(index, source, sources, multi, repeats, spec.name, shown_args,
              {k: v for k, v in defaults.items() if k != spec.c_in_param}, c_out, section,
              "targets" in parameters, "pixel_mask" in parameters)
    return row, module


def _valid_channels(c_out) -> bool:
    """A positive int, a non-empty list of them (multi-output), or None (a head that outputs no map)."""
    if isinstance(c_out, list):
        return bool(c_out) and all(_valid_channels(c) for c in c_out)
    return c_out is None or (isinstance(c_out, int) and not isinstance(c_out, bool) and c_out > 0)


def _check_keywords(spec, signature, kwargs, where):
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    accepted = [p for p in signature.parameters if p != spec.c_in_param]
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise GraphError(f"{spec.name} has no argument {key!r}", where=where,
                             hint=f"{hint}{spec.name} takes ({', '.join(accepted)})")


def _construct(spec, bound, repeats, c_out, where):
    def one(arguments):
        try:
            return spec.cls(**arguments)
        except DetrZooError:
            raise
        except Exception as err:  # noqa: BLE001 (a constructor fails on the row's args in many ways)
            shown = {k: v for k, v in arguments.items() if k != spec.c_in_param}
            raise GraphError(f"{spec.name}{shown} could not be built: {type(err).__name__}: {err}", where=where,
                             hint=f"check the row's args against {spec.name}'s parameters "
                                  f"({', '.join(inspect.signature(spec.cls).parameters)})") from err  # kept: tests read it

    first = one(bound.arguments)
    if repeats == 1 or spec.repeat_arg:
        return first
    rest = []
    for _ in range(repeats - 1):
        arguments = dict(bound.arguments)
        if spec.takes_c_in:
            arguments[spec.c_in_param] = c_out
        rest.append(one(arguments))
    return nn.Sequential(first, *rest)


def _resolve_from(source, index, where):
    multi = isinstance(source, list)
    items = source if multi else [source]
    if multi and not items:
        raise GraphError("`from` is an empty list", where=where, hint="name at least one earlier row")
    resolved = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise GraphError(f"`from` must be an int or a list of ints, got {item!r}", where=where)
        absolute = index + item if item < 0 else item
        if index == 0 and item == -1:
            absolute = -1  # the input image
        elif absolute < 0 or absolute >= index:
            kind = "points forward (or at itself)" if absolute >= index else "is before the first row"
            raise GraphError(f"`from` {item} {kind}: row {index} can only read rows 0..{index - 1}", where=where,
                             hint="use -1 for the previous row or the index of an earlier row")
        resolved.append(absolute)
    return resolved, multi
