"""Name -> object tables: one mechanism for blocks, transforms, datasets, collates, criteria,
optimizers and lr schedules. Names resolve only through a registry (never `eval`/`globals()`), and
an unknown name is an error that names the nearest registered ones."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator

from core.errors import ConfigError, DetrZooError


class UnknownNameError(ConfigError):
    """A name no entry of a registry answers to."""


class Registry:
    """`kind` names what the table holds ("transform", "criterion", ...) in error messages.
    `loader`, when given, is called once before the first lookup to import the modules that
    register entries (so a new file registers itself without an index to edit)."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None,
                 error: type[DetrZooError] = UnknownNameError):
        self.kind, self._loader, self._error = kind, loader, error
        self._entries: dict[str, Any] = {}

    def register(self, obj=None, *, name: str | None = None, aliases: tuple[str, ...] = ()):
        """Decorator (`@REG.register`, `@REG.register(name=...)`) or call (`REG.register(cls)`)."""
        def add(target):
            for key in (name or target.__name__, *aliases):
                existing = self._entries.get(key)
                if existing is not None and existing is not target:
                    raise ValueError(f"{self.kind} name {key!r} registered twice: {existing} and {target}")
                self._entries[key] = target
            return target

        return add if obj is None else add(obj)

    def put(self, key: str, value) -> None:
        """Store a value that is not a class or function (e.g. a block's spec) under `key`."""
        existing = self._entries.get(key)
        if existing is not None and getattr(existing, "cls", existing) is not getattr(value, "cls", value):
            raise ValueError(f"{self.kind} name {key!r} registered twice: {existing} and {value}")
        self._entries[key] = value

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def get(self, key: str, where: str | None = None, hint: str | None = None):
        self._load()
        if isinstance(key, str) and key in self._entries:
            return self._entries[key]
        raise self._error(f"unknown {self.kind} {key!r}", where=where, hint=hint or self.suggest(key))

    def suggest(self, key) -> str:
        """The fix line for an unknown name: the nearest names, else every name."""
        self._load()
        names = list(self._entries)
        text = str(key)
        lowered = [k for k in names if k.lower() == text.lower()]
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.6)
        suggestions = list(dict.fromkeys(lowered + close))
        if suggestions:
            return f"did you mean {', '.join(suggestions)}?"
        return f"known: {', '.join(sorted(names))}" if len(names) <= 30 else f"{len(names)} names are registered"

    def __contains__(self, key) -> bool:
        self._load()
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(sorted(self._entries))

    def items(self):
        self._load()
        return sorted(self._entries.items())

    def __getitem__(self, key):
        return self.get(key)
