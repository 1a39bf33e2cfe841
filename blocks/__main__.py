"""`python -m blocks list [--category C] [--json]`: every registered block with its citation."""
import argparse
import json

from blocks.registry import CATEGORIES, blocks


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m blocks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list registered blocks")
    listing.add_argument("--category", choices=CATEGORIES)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    specs = blocks(args.category)
    if args.json:
        print(json.dumps([{"name": s.name, "category": s.category, "citation": s.citation,
                           "module": s.cls.__module__} for s in specs], indent=1))
        return
    width = max((len(s.name) for s in specs), default=4)
    for category in CATEGORIES:
        rows = [s for s in specs if s.category == category]
        if rows:
            print(f"{category} ({len(rows)})")
            for s in rows:
                print(f"  {s.name:<{width}}  {s.citation}")
    print(f"{len(specs)} blocks")


if __name__ == "__main__":
    main()
