"""Our trainer and deployment against the official code, side by side, in one invocation.

    python bench/vs_official.py --official /path/to/DEIM            # D-FINE-N and DEIM-N configs of a DEIM checkout
    python bench/vs_official.py --official /path/to/DEIMv2 --model deimv2-atto
    python bench/vs_official.py                                     # no checkout: our figures alone

The official checkout is a local clone of ShihuaHuang95/DEIM (its configs hold D-FINE-N and DEIM-N) or
Intellindust-AI-Lab/DEIMv2; nothing of it is copied here. It is imported from its own folder, with
two shims for this environment only: a stand-in `transformers` module when that package is missing
(calflops imports it; nothing calls it) and, on torchvision >= 0.21, the renamed Transform hooks
(`_transform` -> `transform`, `_get_params` -> `make_params`) aliased on the official transform
classes. Official models are built with their pretrained backbone switched off.

Both sides train on the same generated data (`data.demo`, coloured shapes, 3 classes) with the same
settings: the official recipe of `--model` (ours: configs/recipes/*.yml, the official values) at
`--imgsz`, batch `--batch`, Mosaic and MixUp on in every epoch, `--workers` loader processes. Measured:

  step      one training step (forward, criterion, backward, clip, AdamW, EMA) on one saved batch
            that both sides get; median ms, and the process's peak RSS (MiB)
  loader    training-loader images/s at an epoch with Mosaic and MixUp on
  run       the whole `train.py` run (epochs of training and evaluation), wall s and peak RSS
  latency   batch-1 forward at the eval size: PyTorch deploy form (both sides), and ours exported
            to onnxruntime fp32 and int8 (engine.onnx_export.quantize_int8)

Each measurement runs in its own process (so peak memory is its own), ours and theirs alternating,
`--repeats` times; medians are printed with the load average before and after. The machine is
shared: run it nice'd (`nice -n 10`), and compare ratios from one invocation only.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# --model: our graph and recipe, and the official config (path in the checkout) of the same network
MODELS = {
    "dfine-n": ("graphs/dfine/dfine-n.yaml", "configs/recipes/dfine.yml", "configs/deim_dfine/dfine_hgnetv2_n_coco.yml"),
    "deim-n": ("graphs/deim/deim-n.yaml", "configs/recipes/deim.yml", "configs/deim_dfine/deim_hgnetv2_n_coco.yml"),
    "deimv2-atto": ("graphs/deimv2/deimv2-atto.yaml", "configs/recipes/deimv2.yml",
                    "configs/deimv2/deimv2_hgnetv2_atto_coco.yml"),
}


# ----------------------------------------------------------------------------- the official side
def import_official(root: Path):
    """The official package (`engine` or `src`) imported from `root`, its registry filled."""
    if importlib.util.find_spec("transformers") is None:
        stub = types.ModuleType("transformers")
        stub.AutoTokenizer = None  # what calflops imports by name
        stub.__spec__ = importlib.machinery.ModuleSpec("transformers", None)
        sys.modules["transformers"] = stub
    sys.path.insert(0, str(root))
    name = "src" if (root / "src/core").is_dir() else "engine"
    package = importlib.import_module(name)
    for module in ("core", "solver", "data", "zoo"):
        if (root / name / module).is_dir():
            importlib.import_module(f"{name}.{module}")
    _alias_transform_hooks(name)
    return package


def set_official_aside(package) -> dict:
    """Take the official package out of `sys.modules` and `sys.path` once its objects are built, so that
    our own `engine` package (the same top-level name as DEIM's) imports next to them. The built
    objects keep working: their functions hold their modules' globals."""
    name = package.__name__
    aside = {key: sys.modules.pop(key) for key in list(sys.modules) if key == name or key.startswith(name + ".")}
    root = str(Path(package.__file__).resolve().parents[1])
    sys.path[:] = [entry for entry in sys.path if entry != root]
    return aside


def _alias_transform_hooks(package: str) -> None:
    import torchvision.transforms.v2 as T

    def visit(cls):
        for sub in cls.__subclasses__():
            if sub.__module__.startswith(package + "."):
                for old, new in (("_transform", "transform"), ("_get_params", "make_params")):
                    if old in vars(sub) and new not in vars(sub):
                        setattr(sub, new, vars(sub)[old])
            visit(sub)

    visit(T.Transform)


def official_config(root: Path, settings: dict):
    """The official YAMLConfig of the model with our settings written into its merged dict (before
    anything is built from it): data, sizes, batch, epochs, the Mosaic/MixUp windows, class count."""
    package = import_official(root)
    cfg = package.core.YAMLConfig(str(root / MODELS[settings["model"]][2]))
    y = cfg.yaml_cfg
    size, epochs, data = settings["imgsz"], settings["epochs"], Path(settings["data"])
    backbone = y[y["model"]]["backbone"] if y.get("model") in y else "HGNetv2"
    y.setdefault(backbone, {})["pretrained"] = False
    y.update(num_classes=3, remap_mscoco_category=False, eval_spatial_size=[size, size], output_dir=settings["out"],
             print_freq=10 ** 6, checkpoint_freq=10 ** 6, use_amp=False, epoches=epochs, epochs=epochs,
             flat_epoch=epochs, no_aug_epoch=0)
    for split, folder in (("train_dataloader", "train"), ("val_dataloader", "val")):
        section = y[split]
        section["dataset"].update(img_folder=str(data / folder), ann_file=str(data / folder / "_annotations.coco.json"))
        section.update(total_batch_size=settings["batch"], num_workers=settings["workers"])
        for op in section["dataset"]["transforms"]["ops"]:
            if op["type"] == "Resize":
                op["size"] = [size, size]
            elif op["type"] == "Mosaic":
                op["output_size"] = size // 2
    transforms = y["train_dataloader"]["dataset"]["transforms"]
    transforms["policy"]["epoch"] = [0, epochs, epochs]
    transforms["mosaic_prob"] = settings["mosaic_prob"]
    collate = y["train_dataloader"]["collate_fn"]
    collate.update(base_size=size, stop_epoch=epochs, mixup_prob=0.5, mixup_epochs=[0, epochs])
    # YAMLConfig copied its top-level keys (epoches, flat_epoch, output_dir, ...) into attributes when it
    # was built, and the solver reads those: copy ours over them, or the run trains the recipe's epochs
    for key in vars(cfg):
        if not key.startswith("_") and key in y:
            setattr(cfg, key, y[key])
    return package, cfg


# ------------------------------------------------------------------------------------ our side
def our_config(settings: dict) -> Path:
    """Our run config of the same settings (and the -u options), written next to the data."""
    import yaml

    from engine.config import apply_update

    graph, recipe, _ = MODELS[settings["model"]]
    size, epochs, data = settings["imgsz"], settings["epochs"], Path(settings["data"])
    split = {s: {"type": "coco", "img_folder": str(data / s), "ann_file": str(data / s / "_annotations.coco.json")}
             for s in ("train", "val")}
    cfg = {"__include__": [str(REPO / recipe)], "graph": str(REPO / graph), "imgsz": [size, size], "epochs": epochs,
           "flat_epoch": epochs, "no_aug_epoch": 0, "output_dir": settings["out"], "progress_bar": False,
           "plot_train_batch_freq": 0, "checkpoint_freq": 0, "print_freq": 10 ** 6,
           "train_dataloader": {"dataset": {**split["train"], "transforms": {
               "policy": {"epoch": [0, epochs, epochs]}, "mosaic_prob": settings["mosaic_prob"]}},
               "collate_fn": {"stop_epoch": epochs, "mixup_prob": 0.5, "mixup_epochs": [0, epochs]},
               "total_batch_size": settings["batch"], "num_workers": settings["workers"]},
           "val_dataloader": {"dataset": split["val"], "total_batch_size": settings["batch"],
                              "num_workers": settings["workers"]}}
    for text in settings["updates"]:  # -u KEY=VALUE, merged as train.py merges them (validated, deep)
        apply_update(cfg, text)
    path = Path(settings["out"] + ".yml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def our_solver(settings: dict):
    from engine.config import load_config
    from engine.solver import Solver

    return Solver(load_config(our_config(settings)), device="cpu", output_dir=settings["out"])


# ------------------------------------------------------------------------------ measurements
def peak_rss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_step(side: str, settings: dict) -> dict:
    """ms per training step on the saved batch (after warm-up steps), and this process's peak RSS."""
    import torch

    images, targets = torch.load(settings["batch_file"], weights_only=True)
    if side == "ours":
        solver = our_solver(settings)
        solver.model.train()
        step = lambda i: solver.train_step(images, targets, 0, i)  # noqa: E731
    else:
        _, cfg = official_config(Path(settings["official"]), settings)
        model, criterion, optimizer, ema = cfg.model, cfg.criterion, cfg.optimizer, cfg.ema
        model.train()
        criterion.train()
        max_norm = cfg.yaml_cfg.get("clip_max_norm", 0.1)

        def step(i):  # the body of the official det_engine.train_one_epoch (fp32, no AMP)
            outputs = model(images, targets=targets)
            loss_dict = criterion(outputs, targets, epoch=0, step=i, global_step=i, epoch_step=1000)
            loss = sum(loss_dict.values())
            optimizer.zero_grad()
            loss.backward()
            if max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            ema.update(model)
    for i in range(settings["warmup"]):
        step(i)
    times, cpu = [], []
    for i in range(settings["steps"]):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(settings["warmup"] + i)
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    # CPU time (all threads) is less sensitive to other jobs on a shared machine than wall time
    return {"ms": statistics.median(times), "cpu_ms": statistics.median(cpu), "peak_mib": peak_rss_mib()}


def child_loader(side: str, settings: dict) -> dict:
    """Training-loader images/s over `loader_batches` batches (the first, worker start-up, not timed)."""
    if side == "ours":
        import data
        loader = our_solver(settings).train_loader
        data.set_epoch(loader, 0)
    else:
        _, cfg = official_config(Path(settings["official"]), settings)
        loader = cfg.train_dataloader
        loader.set_epoch(0)
    seen, start, batches = 0, None, iter(loader)
    for k in range(settings["loader_batches"] + 1):
        try:
            images, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, _ = next(batches)
        if k == 0:
            start = time.perf_counter()
            continue
        seen += len(images)
    return {"images_per_s": seen / (time.perf_counter() - start)}


def child_official_run(settings: dict) -> dict:
    """The official trainer's whole run (what its train.py does after parsing: the task's solver, fit)."""
    package, cfg = official_config(Path(settings["official"]), settings)
    package.misc.dist_utils.setup_distributed(0, "builtin", seed=0)
    package.solver.TASKS[cfg.yaml_cfg["task"]](cfg).fit()
    return {}


def child_latency(settings: dict) -> dict:
    """Batch-1 forward ms of the deploy forms, interleaved in one process: ours (PyTorch, onnxruntime
    fp32 and int8) and, with a checkout, the official deploy model."""
    import torch

    from bench.latency import interleaved_ms, onnx_runners
    from models import build_model

    torch.manual_seed(0)
    threads = settings["threads"]
    ours = build_model(REPO / MODELS[settings["model"]][0], check=False).deploy()
    height, width = ours.imgsz
    images = torch.rand(1, 3, height, width)
    runners = {"ours_torch": lambda: ours(images)}
    if settings.get("official"):  # built first: our engine package is imported below, after it is set aside
        package, cfg = official_config(Path(settings["official"]), {**settings, "imgsz": height})
        official = cfg.model.deploy()
        set_official_aside(package)
        runners["official_torch"] = lambda: official(images)
    with tempfile.TemporaryDirectory() as folder:
        runners.update({f"ours_{name}": run for name, run in
                        onnx_runners(ours, [height, width], threads, Path(folder), int8=True).items()})
        torch.set_num_threads(threads)
        times = interleaved_ms(runners, settings["latency_repeats"], warmup=2)
    return {name: statistics.median(t) for name, t in times.items()}


def run_child(kind: str, side: str, settings: dict) -> dict:
    """One measurement in a fresh process; with kind `run`, the whole train.py run (wall s, peak RSS)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(settings["threads"])}
    if kind == "run":
        settings = {**settings, "out": str(Path(settings["tmp"]) / f"run_{side}_{time.monotonic_ns()}")}
        if side == "ours":
            command = [sys.executable, str(REPO / "train.py"), "-c", str(our_config(settings)), "-d", "cpu",
                       "--output-dir", settings["out"], "--quiet"]
        else:
            command = [sys.executable, __file__, "--child", "official_run", "--side", side, "--settings",
                       json.dumps(settings)]
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        error = process.stderr.read().decode()[-3000:]
        if status != 0:
            raise RuntimeError(f"{side} run failed:\n{error}")
        return {"s": wall, "peak_mib": usage.ru_maxrss / 1024}
    settings = {**settings, "out": str(Path(settings["tmp"]) / f"{kind}_{side}_{time.monotonic_ns()}")}
    done = subprocess.run([sys.executable, __file__, "--child", kind, "--side", side, "--settings", json.dumps(settings)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{kind} ({side}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- the report
def prepare(settings: dict) -> None:
    """The generated data and one training batch (through our loader: the recipe's augmentations)."""
    import torch

    from data.demo import make_demo

    make_demo(Path(settings["data"]), train=settings["train_images"], val=settings["val_images"], imgsz=640, seed=0)
    for split in ("train", "val"):
        # category ids 0..2: the official COCO loader (remap_mscoco_category off) takes ids as labels
        path = Path(settings["data"]) / split / "_annotations.coco.json"
        coco = json.loads(path.read_text())
        for entry in coco["categories"] + coco["annotations"]:
            entry["id" if "name" in entry else "category_id"] -= 1
        path.write_text(json.dumps(coco))
    solver = our_solver({**settings, "out": str(Path(settings["tmp"]) / "prepare")})
    import data
    data.set_epoch(solver.train_loader, 0)
    images, targets = next(iter(solver.train_loader))
    keep = ("boxes", "labels", "image_id", "area", "iscrowd", "orig_size", "size")
    torch.save((images, [{k: v for k, v in t.items() if k in keep} for t in targets]), settings["batch_file"])
    solver.close()


def measure_all(settings: dict, parts: list[str], repeats: int) -> dict:
    sides = ["ours", "official"] if settings.get("official") else ["ours"]
    results: dict = {}
    for repeat in range(repeats):
        for part in parts:
            # alternating, so a change of load hits both sides alike; latency interleaves inside one process
            for side in (["both"] if part == "latency" else sides):
                measured = run_child(part, side, settings)
                print(json.dumps({"repeat": repeat, "part": part, "side": side, **measured,
                                  "load": round(os.getloadavg()[0], 2)}), file=sys.stderr, flush=True)
                for key, value in measured.items():
                    results.setdefault((part, key if side == "both" else f"{side}_{key}"), []).append(value)
    return {key: statistics.median(values) for key, values in results.items()}


def report(medians: dict, settings: dict, loads: tuple[float, float]) -> str:
    lines = [f"{settings['model']}, {settings['imgsz']} px, batch {settings['batch']}, {settings['epochs']} epochs of "
             f"{settings['train_images']} images (+{settings['val_images']} val), {settings['workers']} workers, "
             f"{settings['threads']} threads; medians of {settings['repeats']}; load average {loads[0]:.1f} before, "
             f"{loads[1]:.1f} after" + (f"; ours with -u {' '.join(settings['updates'])}" if settings["updates"] else "")]
    official = bool(settings.get("official"))
    rows = [("training step (ms)", "step", "ms", False), ("training step CPU time (ms)", "step", "cpu_ms", False),
            ("training step peak RSS (MiB)", "step", "peak_mib", False),
            ("loader (images/s)", "loader", "images_per_s", True), ("whole run (s)", "run", "s", False),
            ("whole run peak RSS (MiB)", "run", "peak_mib", False)]
    lines.append(f"| {'measure':<32} | {'ours':>10} | {'official':>10} | {'speed-up':>9} |")
    lines.append("|" + "---|" * 4)
    for label, part, key, higher_better in rows:
        ours = medians.get((part, f"ours_{key}"))
        if ours is None:
            continue
        theirs = medians.get((part, f"official_{key}"))
        ratio = "" if theirs is None else f"{(ours / theirs) if higher_better else (theirs / ours):.2f}x"
        # for memory the ratio column is official / ours as well: above 1 = we use less
        lines.append(f"| {label:<32} | {ours:>10.1f} | {'' if theirs is None else f'{theirs:.1f}':>10} | {ratio:>9} |")
    latency = {name: ms for (part, name), ms in medians.items() if part == "latency"}
    if latency:
        base = latency.get("official_torch")
        lines.append(f"\nbatch-1 latency at the eval size ({settings['threads']} threads), ms (x official PyTorch deploy):")
        for name in ("official_torch", "ours_torch", "ours_onnxrt", "ours_int8"):
            if name in latency:
                share = f"  ({latency[name] / base:.2f}x)" if base else ""
                lines.append(f"  {name:<15}{latency[name]:8.1f}{share}")
        lines.append(f"  int8 / our fp32 onnxruntime: {latency['ours_int8'] / latency['ours_onnxrt']:.2f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="local checkout of the official repo (DEIM or DEIMv2)")
    parser.add_argument("--model", choices=sorted(MODELS), default="deim-n")
    parser.add_argument("--parts", nargs="+", default=["step", "loader", "run", "latency"],
                        choices=["step", "loader", "run", "latency"])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loader-batches", type=int, default=8)
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE",
                        help="our run options for every measurement, e.g. optimizer.implementation=loop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        settings = json.loads(args.settings)
        if args.child == "latency":
            result = child_latency(settings)
        elif args.child == "official_run":
            result = child_official_run(settings)
        else:
            result = {"step": child_step, "loader": child_loader}[args.child](args.side, settings)
        print(json.dumps(result))
        return result
    from core.errors import ConfigError
    from engine.config import parse_update

    for text in args.update:  # a malformed -u fails here, before any measurement
        try:
            parse_update(text)
        except ConfigError as err:
            parser.error(str(err))
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"model": args.model, "imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs,
                    "train_images": args.train_images, "val_images": args.val_images, "workers": args.workers,
                    "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
                    "loader_batches": args.loader_batches, "latency_repeats": args.latency_repeats,
                    "repeats": args.repeats, "mosaic_prob": 0.5, "updates": args.update, "tmp": tmp,
                    "data": str(Path(tmp) / "data"), "batch_file": str(Path(tmp) / "batch.pt"),
                    "official": str(Path(args.official).resolve()) if args.official else None}
        if args.official and args.model != "deimv2-atto" and not (Path(args.official) / MODELS[args.model][2]).is_file():
            parser.error(f"{args.official} has no {MODELS[args.model][2]} (a DEIM checkout is needed for {args.model})")
        prepare(settings)
        load_before = os.getloadavg()[0]
        medians = measure_all(settings, args.parts, args.repeats)
        print(report(medians, settings, (load_before, os.getloadavg()[0])))
    return medians


if __name__ == "__main__":
    from core.errors import cli_main   # here, not at the top: the official checkout has packages of its own

    cli_main(main)
