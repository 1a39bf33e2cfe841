"""Config validation: every key and type is declared once, next to the code that consumes it.

Two kinds of declaration, both checked with pydantic:

- a plug-in's constructor (a transform, dataset, collate, criterion, matcher, post-processor,
  optimizer): its signature *is* the schema. `check_call(cls, kwargs, where)` refuses an unknown
  key (naming the nearest parameter), a missing required one, and a value of the wrong type
  (naming the parameter and its annotation), and returns the values pydantic coerced (an int where
  a float is declared becomes a float);
- a section that no single constructor takes (the run's top level, a dataloader, the lr schedule,
  EMA, distillation) is a `Section`: a pydantic model with `extra="forbid"`, validated by
  `validate_section`, which reports errors the same way.

Errors are ConfigErrors naming the dotted key (`train_dataloader.total_batch_szie`).
"""
from __future__ import annotations

import difflib
import functools
import inspect
import types
import typing
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from core.errors import ConfigError


MAX_IMGSZ = 8192  # a network input side above this is a typo (a detector at 8k px needs > 100 GB)
# a square side or [h, w] in pixels, as configs write image sizes
ImageSize = Annotated[int, Field(gt=0, le=MAX_IMGSZ)] | Annotated[list[Annotated[int, Field(gt=0, le=MAX_IMGSZ)]],
                                                                  Field(min_length=2, max_length=2)]


class Section(BaseModel):
    """A config section: unknown keys are errors; values are coerced where lossless ("1e-4" -> 1e-4)."""

    # allow_inf_nan: an `.inf` or `.nan` in a YAML is a typo, never a setting (lr: .inf trains to NaN)
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=(),
                              allow_inf_nan=False)

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _no_truth_value_for_a_number(cls, value, info):
        field = cls.model_fields[info.field_name]
        annotation = typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        if misplaced_bool(annotation, value):
            raise ValueError(f"must be {describe(annotation)}, not true/false")
        return value


def _admits_bool(annotation) -> bool:
    """Whether a bool is one of the values `annotation` allows (not merely one pydantic coerces)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _admits_bool(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(a) for a in args)
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in args)
    metadata = getattr(annotation, "__metadata__", None)  # PositiveInt and friends
    if metadata is not None:
        return _admits_bool(annotation.__origin__)
    # None, strings and containers do not take a bool either; an unknown type may, so it is left to pydantic
    return annotation not in (int, float, str, type(None)) and origin not in (list, tuple, dict)


def _item_types(annotation) -> list:
    """The item annotations of the list/tuple members of `annotation`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _item_types(args[0])
    if origin in (typing.Union, types.UnionType):
        return [item for a in args for item in _item_types(a)]
    if origin in (list, tuple):
        return [a for a in args if a is not Ellipsis]
    return []


def misplaced_bool(annotation, value) -> bool:
    """A YAML true/false where the annotation wants a number (pydantic would read it as 1 or 0), as the
    value or as an item of a list of numbers: `epochs: true` is a typo, not one epoch."""
    if isinstance(value, bool):
        return not _admits_bool(annotation)
    if isinstance(value, (list, tuple)) and not _admits_bool(annotation):
        items = _item_types(annotation)
        return bool(items) and any(isinstance(v, bool) and not any(_admits_bool(t) for t in items) for v in value)
    return False


def nearest(key: str, known) -> str:
    """The fix line for an unknown key."""
    known = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"known keys: {', '.join(known)}" if known else "this section takes no keys"


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
          list: "a list", type(None): "null (~)"}


def describe(annotation) -> str:
    """A type annotation in words: `Annotated[int, Gt(0)] | None` -> 'an integer > 0, or null (~)'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        base, *metadata = args
        bounds = []
        for item in metadata:
            for constraint in getattr(item, "metadata", [item]):
                for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                    if getattr(constraint, attr, None) is not None:
                        bounds.append(f"{sign} {getattr(constraint, attr)}")
                for attr, word in (("min_length", "at least"), ("max_length", "at most")):
                    if getattr(constraint, attr, None) is not None:
                        bounds.append(f"{word} {getattr(constraint, attr)} items")
        return describe(base) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        return ", or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple) and args:
        if origin is tuple and Ellipsis not in args:
            return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
        return f"a list, each item {describe(args[0])}"
    if origin is dict:
        return "a mapping"
    if annotation in _NAMES:
        return _NAMES[annotation]
    metadata = getattr(annotation, "__metadata__", None)  # pydantic's PositiveInt and friends
    return describe(typing.Annotated[annotation.__origin__, *metadata]) if metadata else getattr(
        annotation, "__name__", str(annotation))


def _value(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _section_in(annotation) -> type[BaseModel] | None:
    """The section model an annotation holds, through Annotated, unions and lists (`pairs: list[PairConfig]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_section_in, typing.get_args(annotation))), None)


def _field_path(model: type[BaseModel], loc) -> tuple[list[str], Any, type[BaseModel] | None]:
    """(the config keys in pydantic's `loc`, the annotation of the last field, the section model
    that holds the next key, if any). loc also names union members ('constrained-int'), not keys."""
    keys, owner, annotation = [], model, None
    for part in loc:
        if isinstance(part, int):
            keys[-1] = f"{keys[-1]}[{part}]" if keys else f"[{part}]"
        elif owner is not None and part in owner.model_fields:
            keys.append(part)
            field = owner.model_fields[part]
            # pydantic keeps a field's constraints (PositiveInt's > 0) apart from its annotation
            annotation = typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
            owner = _section_in(annotation)
        else:
            break
    return keys, annotation, owner


def _section_error(err: pydantic.ValidationError, model: type[BaseModel], where: str) -> ConfigError:
    first = err.errors()[0]
    loc = list(first["loc"])
    if first["type"] == "extra_forbidden":
        keys, _, holder = _field_path(model, loc[:-1])
        key = ".".join(filter(None, [where, *keys, str(loc[-1])]))
        return ConfigError(f"unknown key {loc[-1]!r}", where=key, hint=nearest(loc[-1], (holder or model).model_fields))
    if first["type"] == "missing" and isinstance(loc[-1], int):   # a list too short for its tuple
        loc = loc[:-1]
        keys, annotation, _ = _field_path(model, loc)
        return ConfigError(f"must be {describe(annotation)}, got {_value(first.get('input'))}",
                           where=".".join(filter(None, [where, *keys])),
                           hint="fix the value in the config file (or the -u override)")
    keys, annotation, holder = _field_path(model, loc)
    key = ".".join(filter(None, [where, *keys]))
    if first["type"] == "missing":
        return ConfigError(f"missing required key {keys[-1]!r}", where=key, hint="add it to the config")
    if first["type"] == "list_type" and holder is not None:   # a list of sections given something else
        problem = "must be a list of mappings"
    elif first["type"] == "value_error" or annotation is None or holder is not None:
        problem = first["msg"].removeprefix("Value error, ")
        problem = problem[0].lower() + problem[1:]
    else:
        problem = f"must be {describe(annotation)}"
    return ConfigError(f"{problem}, got {_value(first.get('input'))}", where=key,
                       hint="fix the value in the config file (or the -u override)")


def validate_section(model: type[Section], data, where: str) -> Section:
    """`data` (a mapping, None for an empty one) as a validated `model`; ConfigError otherwise."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping of keys to values, got {type(data).__name__} {_value(data)}",
                          where=where, hint=f"keys: {', '.join(model.model_fields)}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        raise _section_error(err, model, where) from None


@functools.lru_cache(maxsize=None)
def _parameters(target) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(parameters after self, resolved type hints, takes **kwargs) of a class or function."""
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(function)
    params = dict(signature.parameters)
    params.pop("self", None)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    params = {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001 (a hint that does not resolve is simply not type-checked)
        hints = {}
    return params, hints, var_kw


@functools.lru_cache(maxsize=None)
def _adapter(annotation):
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError, NameError):
        return None


def _validate(adapter: TypeAdapter, annotation, value) -> tuple[bool, Any]:
    """(whether `value` fits `annotation`, its coerced form); true/false never fits a number."""
    if misplaced_bool(annotation, value):
        return False, None
    try:
        return True, adapter.validate_python(value)
    except pydantic.ValidationError:
        return False, None


def parameter_types(target) -> dict[str, Any]:
    """{parameter: annotation} of a class's constructor or a function (unresolvable hints left out)."""
    return _parameters(target)[1]


def type_error(target, key: str, value) -> str | None:
    """Why `value` does not fit the annotation of `target`'s parameter `key`; None when it fits (or
    the parameter has no checkable annotation)."""
    annotation = parameter_types(target).get(key)
    adapter = _adapter(annotation) if annotation is not None else None
    if adapter is None:
        return None
    if not _validate(adapter, annotation, value)[0]:
        return f"{getattr(target, '__name__', target)}.{key} must be {describe(annotation)}, got {_value(value)}"
    return None


def check_call(target, kwargs: dict, where: str, skip: tuple[str, ...] = ()) -> dict:
    """`kwargs` checked against `target`'s signature and type hints; returns the coerced kwargs.

    `skip` names parameters the caller fills itself (so a config may not set them)."""
    name = getattr(target, "__name__", str(target))
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{name} takes a mapping of arguments, got {type(kwargs).__name__} {_value(kwargs)}",
                          where=where)
    params, hints, var_kw = _parameters(target)
    accepted = [k for k in params if k not in skip]
    checked = {}
    forwarded = {}
    for key, value in kwargs.items():
        if key not in params and var_kw and inspect.isclass(target) and target.__mro__[1] is not object:
            forwarded[key] = value  # **kwargs reach the parent class: its signature declares them
            continue
        if key not in params and not var_kw:
            raise ConfigError(f"unknown key {key!r} for {name}", where=f"{where}.{key}", hint=nearest(key, accepted))
        annotation = hints.get(key)
        adapter = _adapter(annotation) if annotation is not None else None
        if adapter is None:
            checked[key] = value
            continue
        fits, coerced = _validate(adapter, annotation, value)
        if not fits:
            raise ConfigError(f"{name}.{key} must be {describe(annotation)}, got {_value(value)}",
                              where=f"{where}.{key}", hint="fix the value in the config file (or the -u override)")
        # keep the config's own containers (a list stays a list, not a pydantic copy of it)
        checked[key] = value if isinstance(value, (list, dict)) else coerced
    if forwarded:
        checked.update(check_call(target.__mro__[1], forwarded, where, skip=(*skip, *params)))
    missing = [k for k, p in params.items() if p.default is p.empty and k not in checked and k not in skip]
    if missing:
        raise ConfigError(f"{name} needs {', '.join(repr(k) for k in missing)}", where=where,
                          hint=f"arguments of {name}: {', '.join(accepted)}")
    return checked
