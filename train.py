"""Train or evaluate any graph: `python train.py -c CONFIG [-r CKPT | -t CKPT] [options]`.

Multi-GPU: `torchrun --nproc_per_node=N train.py -c CONFIG ...` (train_dataloader.total_batch_size
is split over the processes). Flags follow DEIM/D-FINE: -c -r -t -d --seed --use-amp --test-only
-u --output-dir --summary-dir; plus --auto-resume (continue from OUTPUT_DIR/last.pth if present)
and --debug (show tracebacks)."""
from __future__ import annotations

import argparse

from core.errors import ConfigError, cli_main
from analyze.info import print_layer_table
from engine.cli import add_run_arguments, check_weight_flags


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="run config (.yml)")
    parser.add_argument("--test-only", action="store_true", help="evaluate -r weights on the val set")
    parser.add_argument("--quiet", action="store_true", help="do not print the layer table at the start")
    add_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from core import dist
    from engine.config import load_config
    from engine.solver import Solver

    check_weight_flags(args)
    if args.test_only and not args.resume:
        raise ConfigError("--test-only needs the weights to evaluate", hint="add -r path/to/best.pth")
    cfg = load_config(args.config, args.update)
    options = {k: v for k, v in vars(args).items() if k not in ("config", "update", "debug", "quiet")}
    options["config"], options["update"] = args.config, args.update
    try:
        solver = Solver(cfg, **options)
        if not args.quiet and dist.is_main():
            print_layer_table(solver.raw_model)
        return solver.test() if args.test_only else solver.fit()
    finally:
        dist.cleanup()


if __name__ == "__main__":
    cli_main(main)
