"""`python -m analyze.config -c CONFIG [-u key=value ...]`: the merged run config, value by value,
with the file (or `-u` override) each value came from."""
from __future__ import annotations

import argparse

import yaml

from engine.config import load_config
from core.errors import cli_main


def flatten(cfg: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += flatten(value, dotted + ".")
        else:
            rows.append((dotted, value))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.config", description=__doc__)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-u", "--update", nargs="+", default=[])
    parser.add_argument("--yaml", action="store_true", help="print the merged config as YAML only")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    cfg, sources = load_config(args.config, args.update, with_sources=True)
    if args.yaml:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return
    rows = flatten(cfg)
    width = max((len(k) for k, _ in rows), default=10) + 1
    print(f"# merged config of {args.config}: value, then where it came from")
    for key, value in rows:
        text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip().removesuffix("\n...")
        text = text.removesuffix("...").strip()
        print(f"{key + ':':<{width}} {text:<40} # {sources.get(key, '?')}")


if __name__ == "__main__":
    cli_main(main)
