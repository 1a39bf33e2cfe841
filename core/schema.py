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
import typing
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, TypeAdapter

from core.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors; values are coerced where lossless ("1e-4" -> 1e-4)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())


def nearest(key: str, known) -> str:
    """The fix line for an unknown key."""
    known = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"known keys: {', '.join(known)}" if known else "this section takes no keys"


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    text = text or str(annotation).replace("typing.", "")
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(text, text)


def _value(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _section_error(err: pydantic.ValidationError, model: type[BaseModel], where: str) -> ConfigError:
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join([where, *loc]) if where else ".".join(loc)
    if first["type"] == "extra_forbidden":
        owner = model
        for part in loc[:-1]:  # the nested section that holds the unknown key
            field = owner.model_fields.get(part) if isinstance(owner, type) and issubclass(owner, BaseModel) else None
            annotation = field.annotation if field else None
            owner = next((a for a in (annotation, *typing.get_args(annotation or int))
                          if isinstance(a, type) and issubclass(a, BaseModel)), None)
        known = owner.model_fields if owner is not None else []
        return ConfigError(f"unknown key {loc[-1]!r}", where=key, hint=nearest(loc[-1], known))
    if first["type"] == "missing":
        return ConfigError(f"missing required key {loc[-1]!r}", where=key, hint="add it to the config")
    return ConfigError(f"{first['msg'].lower()}, got {_value(first.get('input'))}", where=key,
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
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 (a hint that does not resolve is simply not type-checked)
        hints = {}
    return params, hints, var_kw


@functools.lru_cache(maxsize=None)
def _adapter(annotation):
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError, NameError):
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
    for key, value in kwargs.items():
        if key not in params and not var_kw:
            raise ConfigError(f"unknown key {key!r} for {name}", where=f"{where}.{key}", hint=nearest(key, accepted))
        annotation = hints.get(key)
        adapter = _adapter(annotation) if annotation is not None else None
        if adapter is None:
            checked[key] = value
            continue
        try:
            coerced = adapter.validate_python(value)
        except pydantic.ValidationError:
            raise ConfigError(f"{name}.{key} must be {_type_name(annotation)}, got {_value(value)}",
                              where=f"{where}.{key}", hint="fix the value in the config file (or the -u override)"
                              ) from None
        # keep the config's own containers (a list stays a list, not a pydantic copy of it)
        checked[key] = value if isinstance(value, (list, dict)) else coerced
    missing = [k for k, p in params.items() if p.default is p.empty and k not in checked and k not in skip]
    if missing:
        raise ConfigError(f"{name} needs {', '.join(repr(k) for k in missing)}", where=where,
                          hint=f"arguments of {name}: {', '.join(accepted)}")
    return checked
