"""`python -m analyze.tide --gt ANN.json --pred RESULTS.json [--out DIR] [--json]`: TIDE error breakdown
(dAP per error type, metrics.tide) of a COCO results file against its annotations, printed and plotted."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.checkpoint_io import atomic_write_text
from core.errors import ConfigError, cli_main
from metrics.tide import evaluate, plot


def writable_folder(folder: Path, flag: str) -> None:
    """`folder` created if missing; a file there, or no permission, is a clear error."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder} is a file", where=flag, hint="give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {folder}: {err.strerror}", where=flag,
                          hint="choose a folder you can write") from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.tide", description=__doc__)
    parser.add_argument("--gt", required=True, help="COCO annotation JSON")
    parser.add_argument("--pred", required=True, help="COCO results JSON (list of detections)")
    parser.add_argument("--out", help="folder for tide.json and tide.png")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--pos-thresh", type=float, default=0.5)
    parser.add_argument("--bg-thresh", type=float, default=0.1)
    parser.add_argument("--max-dets", type=int, default=100)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.out:   # before the evaluation, which can take minutes
        writable_folder(Path(args.out), "--out")
    result = evaluate(args.gt, args.pred, args.pos_thresh, args.bg_thresh, args.max_dets)
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.summary())
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "tide.json", json.dumps(result.as_dict(), indent=1))
        plot(result, out / "tide.png")
        print(f"wrote {out / 'tide.json'} and {out / 'tide.png'}")


if __name__ == "__main__":
    cli_main(main)
