"""`detrzoo COMMAND [ARGS ...]`: the checkout's scripts and `python -m` commands, from any folder.

`detrzoo train -c CFG` is `python train.py -c CFG` run in the checkout, `detrzoo info GRAPH` is
`python -m analyze.info GRAPH`, and so on (`detrzoo help` lists them). The arguments go through
unchanged and are read from the current folder; a `graphs/...` or `configs/...` path that is not
there names the checkout's file, so `detrzoo info graphs/deim/deim-n.yaml` works anywhere."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

from detrzoo import ROOT

# command -> (what runs: a script of the checkout, or a module run as `python -m`, what it does)
COMMANDS = {
    "train": ("train.py", "train or evaluate a run config (-c CFG [-r/-t CKPT] [--test-only])"),
    "distill": ("distill.py", "distil a student from a teacher (-sc STUDENT -tc TEACHER -tw WEIGHTS)"),
    "predict": ("predict.py", "detect on images, folders or videos (-c CFG -r CKPT -i INPUT -o OUT)"),
    "export": ("export.py", "export to ONNX (and TensorRT) (-c CFG -r CKPT [--check])"),
    "info": ("analyze.info", "params, MACs and FLOPs of a graph or run config"),
    "flops": ("analyze.flops", "params, FLOPs and CPU time of single blocks"),
    "config": ("analyze.config", "the merged run config and where each value came from"),
    "ablate": ("analyze.ablate", "train graph variants side by side, one table and plot"),
    "dataset": ("analyze.dataset", "class and box statistics of a COCO annotation file"),
    "heatmap": ("analyze.heatmap", "Grad-CAM style heatmaps of chosen rows"),
    "featuremap": ("analyze.featuremap", "feature maps of chosen rows"),
    "tide": ("analyze.tide", "TIDE error breakdown of a predictions file"),
    "convert": ("models.convert", "map an official checkpoint onto a graph"),
    "checkpoint": ("engine.checkpoint", "rewrite a checkpoint (--ema-only inference weights, --trust)"),
    "blocks": ("blocks", "list the registered blocks"),
    "yolo2coco": ("data.yolo2coco", "convert a YOLO dataset to COCO"),
    "demo": ("data.demo", "write the synthetic demo dataset"),
}
CHECKOUT_FOLDERS = ("graphs/", "configs/")


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: detrzoo COMMAND [ARGS ...]   (detrzoo COMMAND -h: the command's own options)", "",
             f"runs the detrzoo checkout at {ROOT}", "", "commands:"]
    lines += [f"  {name:<{width}}{doc}  [{target}]" for name, (target, doc) in COMMANDS.items()]
    return "\n".join(lines)


def checkout_path(arg: str, cwd: Path) -> str:
    """`arg`, or the checkout's file when `arg` is a graphs/ or configs/ path missing from `cwd`."""
    if arg.startswith(CHECKOUT_FOLDERS) and not (cwd / arg).exists() and (ROOT / arg).exists():
        return str(ROOT / arg)
    return arg


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(usage())
        return
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.exit(f"error: unknown command {command!r}\n\n{usage()}")
    if not (ROOT / "train.py").is_file():
        sys.exit(f"error: detrzoo runs the checkout it was installed from, and {ROOT} is not one\n"
                 "fix: install it editable from a clone: `pip install -e .` in the checkout")
    target = COMMANDS[command][0]
    cwd = Path.cwd()
    sys.path.insert(0, str(ROOT))
    sys.argv = [f"detrzoo {command}", *(checkout_path(a, cwd) for a in args)]
    if target.endswith(".py"):
        runpy.run_path(str(ROOT / target), run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
