"""`python -m analyze.config -c CONFIG [-u key=value ...] [--yaml]`: the run config as training uses it
(merged, validated, derived), value by value, each with where it came from: `FILE:LINE`, the `-u`
override, the rule that derived it (`derived: from epochs 24 ...`), or `default` (the value the
config schema gives a key no file sets). A config that does not resolve on its own (a recipe without
datasets) is shown as merged, with the reason."""
from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import yaml

from core.errors import ConfigError, cli_main
from core.yaml_io import key_lines, load_yaml
from engine.config import load_config, resolve
from engine.vocabulary import COCO_REMAP, NAMED_SECTIONS, RENAMES


def flatten(cfg, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, leaf value) rows; list items that are mappings get `[i]` keys (`ops[2].size`)."""
    rows = []
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += flatten(value, dotted + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                rows += flatten(item, f"{dotted}[{i}].") if item else [(f"{dotted}[{i}]", item)]
        else:
            rows.append((dotted, value))
    return rows


def parents(dotted: str) -> list[str]:
    """`a.b[2].c` -> ['a.b[2].c', 'a.b[2]', 'a.b', 'a']: the key, then the keys that hold it."""
    out = [dotted]
    while True:
        shorter = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", out[-1])
        if shorter == out[-1] or not shorter:
            return out
        out.append(shorter)


@functools.cache
def _file(path: str) -> tuple[dict, dict]:
    """A config file's raw mapping (official spellings) and the line of each of its keys."""
    return load_yaml(path, error=ConfigError) or {}, key_lines(Path(path).read_text(encoding="utf-8-sig"), path)


def official_spellings(dotted: str, raw: dict) -> list[str]:
    """Where a key of ours may stand in a file that uses the official vocabulary (engine.vocabulary)."""
    spellings = [dotted]
    renames = [(official, key) for official, keys in RENAMES.items() for key in keys]
    for official, ours in [*renames, ("lrsheduler", "lr_scheduler.type")]:
        if dotted == ours or dotted.startswith(ours + "."):
            spellings.append(official + dotted[len(ours):])
    section, _, rest = dotted.partition(".")
    if section in NAMED_SECTIONS and isinstance(raw.get(section), str):   # `criterion: Name` + `Name: {...}`
        spellings.append(section if rest == "type" else f"{raw[section]}.{rest}")
    if dotted.endswith("dataset." + COCO_REMAP):
        spellings.append(COCO_REMAP)
    return spellings


def _shown(path: str) -> str:
    """A file as the user would type it: relative to the current folder when inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def where_from(dotted: str, sources: dict[str, str]) -> str | None:
    """`FILE:LINE` or `-u ...` for a key the files or overrides set; None for others."""
    for key in parents(dotted):           # a list item or a key inside a list: the list's origin
        origin = sources.get(key)
        if origin is None:
            continue
        if origin.startswith("-u "):
            return origin
        raw, lines = _file(origin)
        for candidate in (k for held in parents(dotted) for k in official_spellings(held, raw)):
            if candidate in lines:
                return f"{_shown(origin)}:{lines[candidate]}"
        return _shown(origin)
    return None


def explain(path: str, updates: list[str]) -> tuple[dict, list[tuple[str, object, str]], str | None]:
    """(the config, [(dotted key, value, origin)], why it is shown unresolved or None)."""
    cfg, sources = load_config(path, updates, with_sources=True)
    try:
        resolved, rules = resolve(cfg, config_path=path, training=False, explain=True)
    except ConfigError as err:
        resolved, rules, reason = cfg, {}, f"{err.where + ': ' if err.where else ''}{err.message}"
    else:
        reason = None
    rows = []
    for key, value in flatten(resolved):
        rule = next((rules[k] for k in parents(key) if k in rules), None)
        origin = f"derived: {rule}" if rule else where_from(key, sources) or "default"
        rows.append((key, value, origin))
    return resolved, rows, reason


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.config", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-u", "--update", nargs="+", default=[])
    parser.add_argument("--yaml", action="store_true", help="print the config as YAML only")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    cfg, rows, reason = explain(args.config, args.update)
    if args.yaml:
        print(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), end="")
        return
    width = max((len(k) for k, _, _ in rows), default=10) + 1
    if reason:
        print(f"# {args.config} as merged, nothing derived: it does not resolve on its own ({reason})")
    else:
        print(f"# {args.config} as training uses it: value, then the file:line, -u override or rule it came from")
    for key, value, origin in rows:
        text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6, allow_unicode=True).strip()
        text = text.removesuffix("...").strip()
        print(f"{key + ':':<{width}} {text:<40} # {origin}")


if __name__ == "__main__":
    cli_main(main)
