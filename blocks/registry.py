"""The block registry: every graph row resolves its module name here, and nowhere else.

A block registers itself with its category, its channel rule and an example the contract test
builds. The parser asks the spec how the block's output channels follow from its inputs; it
never learns block names.

Channel rules (``channels=``):
    "same"   output channels = input channels (single input)
    "arg0"   output channels = the block's first argument after the input channels; that
             argument is also the one a graph's width multiplier scales (Ultralytics' c2)
    "sum"    output channels = sum of the input channels (Concat)
    "first"  output channels = channels of the first input (Add-like; all must agree)
    callable rule(c_in, kwargs) -> int | list[int], with kwargs the constructor's bound arguments
             (defaults applied); a list declares a multi-output block (a whole backbone).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import DetrZooError
from core.registry import Registry

CATEGORIES = (
    "conv", "attention", "upsample", "downsample", "neck", "mamba", "transformer",
    "mlp", "norm", "backbone", "encoder", "decoder",
)
ChannelRule = str | Callable[[Any, dict], Any]
_NAMED_RULES = ("same", "arg0", "sum", "first")


class UnknownBlockError(DetrZooError):
    """A name that no registered block (nor torch.nn) answers to."""


class ChannelError(DetrZooError):
    """Input channels that a block cannot accept (e.g. Add over unequal channels)."""


@dataclass(frozen=True)
class BlockSpec:
    name: str
    cls: type
    category: str
    channels: ChannelRule
    takes_c_in: bool
    example: dict
    repeat_arg: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def citation(self) -> str:
        # the class's own docstring, else its file's (never one inherited from nn.Module)
        doc = self.cls.__dict__.get("__doc__") or inspect.getmodule(self.cls).__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.cls)

    @property
    def multi_input(self) -> bool:
        """Whether the block reads a list of maps (its example declares several input shapes)."""
        return "shapes" in self.example or self.channels in ("sum", "first")

    @property
    def c_in_param(self) -> str | None:
        """Name of the constructor parameter that receives the input channels."""
        if not self.takes_c_in:
            return None
        return next(iter(self.signature.parameters))

    @property
    def out_param(self) -> str | None:
        """Name of the constructor parameter that sets the output channels (rule "arg0")."""
        if self.channels != "arg0":
            return None
        names = list(self.signature.parameters)
        return names[1] if self.takes_c_in else names[0]

    def out_channels(self, c_in, kwargs: dict):
        rule = self.channels
        if callable(rule):
            return rule(c_in, kwargs)
        if rule == "same":
            return c_in
        if rule == "arg0":
            return kwargs[self.out_param]
        if not isinstance(c_in, (list, tuple)):
            c_in = [c_in]
        if rule == "sum":
            return sum(c_in)
        if rule == "first":
            if len(set(c_in)) != 1:
                raise ChannelError(f"{self.name} needs inputs with equal channels, got {list(c_in)}",
                                   hint="project the inputs to one width first (e.g. a Conv row)")
            return c_in[0]
        raise AssertionError(rule)


def import_all_blocks() -> None:
    """Import every block file under the category folders once, so each registers itself (a new file
    needs no index to edit); files starting with `_` are shared helpers, imported by their users."""
    import importlib
    import pkgutil
    from pathlib import Path

    for category in CATEGORIES:
        folder = Path(__file__).parent / category
        for info in pkgutil.iter_modules([str(folder)]):
            if not info.name.startswith("_"):
                importlib.import_module(f"blocks.{category}.{info.name}")


_REGISTRY = Registry("module", loader=import_all_blocks, error=UnknownBlockError)


def register(category: str, channels: ChannelRule = "same", example: dict | None = None,
             c_in: bool = True, repeat_arg: str | None = None, name: str | None = None, **extra):
    """Class decorator that puts a block into the registry.

    category   one of CATEGORIES
    channels   the channel rule (see module docstring)
    example    {"args": [...], "kwargs": {...}, "shape": (B, C, H, W)} or "shapes": [...] for
               multi-input blocks; the contract test builds the block from it. "args" and
               "kwargs" exclude the input channels, which come from the shape.
    c_in       whether the constructor's first parameter receives the input channels
    repeat_arg constructor parameter that takes a row's `repeats` (C2f's n); otherwise the
               parser stacks `repeats` copies in sequence
    inputs     (keyword, in **extra) the numbers of input maps a multi-input block accepts, e.g.
               (1, 2) for SEFN (a map, and optionally its spatial guide); the parser checks `from`
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    if isinstance(channels, str) and channels not in _NAMED_RULES:
        raise ValueError(f"unknown channel rule {channels!r}; use {_NAMED_RULES} or a callable")

    def wrap(cls):
        key = name or cls.__name__
        _REGISTRY.put(key, BlockSpec(key, cls, category, channels, c_in, example or {}, repeat_arg, extra))
        return cls

    return wrap


def get(name: str) -> BlockSpec:
    if name in _REGISTRY:
        return _REGISTRY.get(name)
    hint = _REGISTRY.suggest(name)
    if not hint.startswith("did you mean"):
        hint = "run `python -m blocks list` to see every registered block"
    return _REGISTRY.get(name, hint=hint)


def blocks(category: str | None = None) -> list[BlockSpec]:
    return sorted((spec for _, spec in _REGISTRY.items() if category in (None, spec.category)),
                  key=lambda s: (s.category, s.name))
