"""Reading YAML files that users hand us (graphs, run configs, Ultralytics data.yaml), safely.

A SafeLoader subclass (no Python objects) that also refuses what `yaml.safe_load` lets through:
duplicate keys (YAML keeps the last silently), alias bombs (a few lines that expand to billions of
nodes once merged or copied), nesting deep enough to exhaust the stack, and files too big to be a
config. Every refusal is an error naming the file and line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import DetrZooError

MAX_BYTES = 16 * 2 ** 20      # a graph or recipe is a few KB; a COCO-sized data.yaml stays far below this
MAX_ALIASES = 1000            # anchors are for sharing a few settings, not for building data
MAX_EXPANDED_NODES = 10 ** 6  # values once every alias is expanded (a COCO-sized data.yaml has ~100)
MAX_DEPTH = 100               # the deepest shipped config nests 7 levels


class YamlError(DetrZooError):
    """A YAML file that cannot be read: syntax, duplicate keys, or a resource limit."""


class _Limits(yaml.constructor.ConstructorError):
    """Raised inside the loader when a resource limit is hit."""


class SafeYamlLoader(yaml.SafeLoader):
    """safe_load with duplicate-key refusal and limits on aliases and nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limits(None, None, f"more than {MAX_ALIASES} aliases (*name); this looks like an alias "
                                          "bomb", self.peek_event().start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limits(None, None, f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        # a few aliases of aliases expand geometrically (10 levels of 10 make 10^10 values once merged or
        # copied): count the values as expanded, each shared node once per use, before constructing
        document = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(node) -> int:
            if id(node) not in sizes:
                children = node.value if isinstance(node, yaml.SequenceNode) else \
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
                sizes[id(node)] = 1 + sum(expanded(child) for child in children)
            return sizes[id(node)]

        if document is not None and expanded(document) > MAX_EXPANDED_NODES:
            raise _Limits(None, None, f"its aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values; "
                                      "this looks like an alias bomb", document.start_mark)
        return document

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *base`; its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)



def parse_yaml(text: str, where: str = "<string>", error: type[DetrZooError] = YamlError) -> Any:
    """Parse YAML text with the limits above; errors name `where` and the line."""
    try:
        return yaml.load(text, Loader=SafeYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        if isinstance(err, _Limits):
            hint = "write the values out; a config needs neither deep nesting nor many aliases"
        elif problem.startswith("duplicate key"):
            hint = "keep one of the two (YAML would silently use the last)"
        else:
            hint = "fix the YAML at that line (indentation, brackets, a missing colon)"
        raise error(f"YAML syntax error: {problem}", where=f"{where}{line}", hint=hint) from None
    except RecursionError:  # nesting inside flow collections is composed without compose_node's counter
        raise error(f"YAML nesting too deep to read (over {MAX_DEPTH} levels)", where=where,
                    hint="a config needs only a few levels of nesting") from None


def key_lines(text: str, where: str = "<string>") -> dict[str, int]:
    """The 1-based line of every key and list item of a YAML document, by dotted path (`a.b`,
    `a.ops[2].size`), from the node marks the composer records."""
    try:
        root = yaml.compose(text, Loader=SafeYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise YamlError(f"YAML syntax error: {getattr(err, 'problem', None) or err}", where=where) from None
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[dotted] = key.start_mark.line + 1
                walk(value, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{prefix}[{i}]")

    walk(root, "")
    return lines


def load_yaml(path: str | Path, error: type[DetrZooError] = YamlError) -> Any:
    """Read a YAML file safely: UTF-8, at most MAX_BYTES, with the loader's limits."""
    path = Path(path)
    if not path.is_file():
        raise error(f"file not found: {path}", hint="check the path (relative to the current directory)")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise error(f"{size / 2 ** 20:.0f} MB is too big for a YAML config (limit {MAX_BYTES // 2 ** 20} MB)",
                    where=str(path), hint="is this the right file? a graph or recipe is a few KB")
    raw = path.read_bytes()
    if raw.startswith(b"PK\x03\x04") or raw[:2] == b"\x80\x02" or b"\x00" in raw[:4096]:
        raise error("this is a binary file (a checkpoint or an archive?), not a YAML config", where=str(path),
                    hint="pass the .yml file here; weights go to -r / -t (train.py) or -tw (distill.py)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise error(f"not UTF-8 text (byte {raw[err.start]:#04x} at line {line})", where=f"{path} line {line}",
                    hint="save the file as UTF-8 (e.g. `iconv -f gbk -t utf-8 IN > OUT`)") from None
    return parse_yaml(text, str(path), error)
