"""Train a student with a frozen teacher: `python distill.py -sc STUDENT_CFG -tc TEACHER_CFG -tw TEACHER_WEIGHTS`.

The student config is a run config (as for train.py) with a `distill:` section (kd_loss_type
logit | feature | all, schedule, epoch window, feature pairs, foundation teacher: see
engine/distill.py). The teacher is built from its own config and weights (train.py checkpoints or
official releases), kept in eval mode and never saved. The rest is train.py's: -r -t -d --seed
--use-amp -u --output-dir --summary-dir --auto-resume; `train.py -c STUDENT_CFG --test-only -r
OUTPUT/best.pth` evaluates the distilled student. Multi-GPU: `torchrun --nproc_per_node=N distill.py ...`."""
from __future__ import annotations

import argparse

from core.errors import ConfigError, cli_main
from analyze.info import print_layer_table
from engine.cli import add_run_arguments, check_weight_flags


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-sc", "--student-config", required=True, help="student run config with a `distill:` section")
    parser.add_argument("-tc", "--teacher-config", help="teacher run config (its graph)")
    parser.add_argument("-tw", "--teacher-weights", help="teacher checkpoint (ours or an official release)")
    parser.add_argument("--quiet", action="store_true", help="do not print the student's layer table at the start")
    parser.add_argument("-tu", "--teacher-update", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override teacher config values")
    add_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from core import dist
    from engine.config import load_config
    from engine.solver import Solver

    check_weight_flags(args)
    if bool(args.teacher_config) != bool(args.teacher_weights):
        raise ConfigError("-tc and -tw go together", where="-tc/-tw", hint="the teacher's config and its weights")
    cfg = load_config(args.student_config, args.update)
    options = {k: v for k, v in vars(args).items() if k not in ("student_config", "teacher_update", "update", "debug", "quiet")}
    options["config"], options["update"], options["teacher_updates"] = args.student_config, args.update, args.teacher_update
    try:
        if not isinstance(cfg.get("distill"), dict):
            raise ConfigError("the student config has no `distill:` section", where=args.student_config,
                              hint="add distill: {kd_loss_type: logit} (see engine/distill.py for every key)")
        solver = Solver(cfg, **options)
        if not args.quiet and dist.is_main():
            print_layer_table(solver.raw_model)
        return solver.fit()
    finally:
        dist.cleanup()


if __name__ == "__main__":
    cli_main(main)
