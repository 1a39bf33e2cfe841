"""Training-step throughput: images/s, peak memory and where the time goes.

    python bench/train_step.py [--graph graphs/deim/deim-n.yaml] [--sizes 320 640] [--batch 4] [--steps 5] [-d cpu]
    python bench/train_step.py --sizes 320 -u compile=true optimizer.implementation=loop   # run options

Each size runs in its own process (so peak memory is that size's own) with the DEIM recipe: the
demo data (generated in a temp folder) through the recipe's train augmentations, the DEIM
criterion, AdamW and EMA. Time is split into data (loading + augmentation + collate), forward,
loss, backward and optimizer (step + EMA update). Peak memory is the process's max RSS on CPU, or
torch's peak allocation on CUDA. `first s` is the first step alone (with `compile=true`: the compile
time); `cpu ms` the process CPU time per timed step (steadier than wall time on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.errors import cli_main  # noqa: E402


def bench_one(graph: str, size: int, batch: int, steps: int, warmup: int, device: str, data_root: Path,
              updates=()) -> dict:
    import torch
    import yaml

    from engine.config import load_config
    from engine.solver import Solver, _to_device

    recipe = load_config(REPO / "configs/recipes/deim.yml")
    train_ops = recipe["train_dataloader"]["dataset"]["transforms"]["ops"]
    cfg = {"__include__": [str(REPO / "configs/recipes/deim.yml")], "graph": str(REPO / graph), "imgsz": [size, size],
           "epochs": 2, "progress_bar": False, "plot_train_batch_freq": 0,
           "train_dataloader": {"dataset": {"type": "coco", "img_folder": str(data_root / "train"),
                                            "ann_file": str(data_root / "train/_annotations.coco.json"),
                                            "transforms": {"ops": train_ops}},
                                "total_batch_size": batch, "num_workers": 0},
           "val_dataloader": {"dataset": {"type": "coco", "img_folder": str(data_root / "val"),
                                          "ann_file": str(data_root / "val/_annotations.coco.json")},
                              "total_batch_size": batch, "num_workers": 0}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yml"
        path.write_text(yaml.safe_dump(cfg))
        solver = Solver(load_config(path, updates), device=device, output_dir=str(Path(tmp) / "run"))
        solver.model.train()
        dev = solver.device

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        shares = dict.fromkeys(("data", "forward", "loss", "backward", "optimizer"), 0.0)
        batches = iter(solver.train_loader)
        first = cpu_start = None
        for step in range(warmup + steps):
            if step == 1:
                first = sum(shares.values())
            if step == warmup:
                shares = dict.fromkeys(shares, 0.0)
                cpu_start = time.process_time()
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
            marks = [time.perf_counter()]
            try:
                images, targets = next(batches)
            except StopIteration:
                batches = iter(solver.train_loader)
                images, targets = next(batches)
            images, targets = images.to(dev), _to_device(targets, dev)
            sync()
            marks.append(time.perf_counter())
            outputs = solver.model(images, targets=targets)
            sync()
            marks.append(time.perf_counter())
            loss = sum(solver.criterion(outputs, targets, epoch=0).values())
            sync()
            marks.append(time.perf_counter())
            loss.backward()
            sync()
            marks.append(time.perf_counter())
            torch.nn.utils.clip_grad_norm_(solver.model.parameters(), 0.1)
            solver.optimizer.step()
            solver.optimizer.zero_grad(set_to_none=True)
            solver.ema.update(solver.raw_model)
            sync()
            marks.append(time.perf_counter())
            for name, start, end in zip(shares, marks, marks[1:]):
                shares[name] += end - start
    total = sum(shares.values())
    cpu = time.process_time() - cpu_start
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"size": size, "batch": batch, "steps": steps, "device": str(dev), "threads": torch.get_num_threads(),
            "images_per_s": batch * steps / total, "ms_per_step": 1000 * total / steps, "peak_mem_mb": peak / 2 ** 20,
            "first_step_s": first, "cpu_ms_per_step": 1000 * cpu / steps,
            "shares": {k: v / total for k, v in shares.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", default="graphs/deim/deim-n.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("-d", "--device", default="cpu")
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="run config overrides")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(bench_one(args.graph, args.one, args.batch, args.steps, args.warmup, args.device, Path(args.data),
                                   args.update)))
        return
    from data.demo import make_demo

    with tempfile.TemporaryDirectory() as tmp:
        make_demo(Path(tmp), train=max(16, args.batch * (args.steps + args.warmup)), val=4, imgsz=640, seed=0)
        print(f"{args.graph}, batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up, {args.device}")
        print(f"{'size':>5}{'img/s':>8}{'ms/step':>9}{'cpu ms':>9}{'first s':>9}{'peak MB':>9}  data  fwd   loss  bwd   optim")
        for size in args.sizes:
            command = [sys.executable, __file__, "--one", str(size), "--graph", args.graph, "--batch", str(args.batch),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "-d", args.device, "--data", tmp,
                       *(["-u", *args.update] if args.update else [])]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                print(done.stderr[-2000:])
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            shares = "  ".join(f"{100 * r['shares'][k]:3.0f}%" for k in ("data", "forward", "loss", "backward", "optimizer"))
            print(f"{size:>5}{r['images_per_s']:>8.2f}{r['ms_per_step']:>9.0f}{r['cpu_ms_per_step']:>9.0f}"
                  f"{r['first_step_s']:>9.1f}{r['peak_mem_mb']:>9.0f}  {shares}")


if __name__ == "__main__":
    cli_main(main)
