"""What the training entry points (train.py, distill.py) share on their command lines: the flags of
the DEIM/D-FINE family and their checks."""
from __future__ import annotations

import argparse

from core.errors import ConfigError


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every training entry point shares (train.py, distill.py)."""
    parser.add_argument("-r", "--resume", help="resume training (model, EMA, optimizer, epoch...) or --test-only weights")
    parser.add_argument("-t", "--tuning", help="fine-tune from weights (ours or an official release)")
    parser.add_argument("-d", "--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--use-amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)")
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    parser.add_argument("--output-dir")
    parser.add_argument("--summary-dir")
    parser.add_argument("--auto-resume", action="store_true", help="continue from OUTPUT_DIR/last.pth when it exists")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def check_weight_flags(args) -> None:
    if args.resume and args.tuning:
        raise ConfigError("-r and -t cannot be combined", hint="-r continues a run; -t starts a new one from weights")

