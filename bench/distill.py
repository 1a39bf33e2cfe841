"""Does distillation help a tiny student on the demo shapes? AP of the student trained without a
teacher and with each kd_loss_type, same recipe and epochs, over several seeds (CPU, minutes).

    python -m bench.distill [--out outputs/bench_distill] [--teacher-epochs 20] [--epochs 12] [--seeds 0 1 2]
                            [--kinds none logit feature all] [--kd-weight 1.0]

The teacher is a small S-like graph (wider conv backbone, 3-layer decoder, 40 queries) trained first;
the student is a 4-conv backbone with a 2-layer decoder (12 queries). Images are 64 px so the whole
benchmark stays in minutes on two cores. Prints a markdown table (mean ± std of AP50:95 and AP50)
and writes it to OUT/results.md with the per-seed numbers in OUT/results.json."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import yaml

from engine.config import load_config
from engine.solver import Solver

REPO = Path(__file__).resolve().parents[1]

DECODER = {"feat_strides": [8, 16], "num_levels": 2, "nhead": 4, "reg_max": 16, "activation": "silu", "mlp_act": "silu"}
TEACHER_GRAPH = {
    "nc": 3, "imgsz": [64, 64],
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],     # 0  stride 2
        [-1, 1, "Conv", [32, 3, 2]],     # 1  stride 4
        [-1, 1, "Conv", [64, 3, 2]],     # 2  stride 8
        [-1, 2, "Conv", [64, 3, 1]],     # 3
        [-1, 1, "Conv", [96, 3, 2]],     # 4  stride 16
        [-1, 1, "Conv", [96, 3, 1]],     # 5
    ],
    "decoder": [[[3, 5], 1, "DFINEDecoder", {**DECODER, "hidden_dim": 64, "num_queries": 40, "num_points": [4, 4],
                                             "num_layers": 3, "dim_feedforward": 128, "num_denoising": 30}]],
}
STUDENT_GRAPH = {
    "nc": 3, "imgsz": [64, 64],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],      # 0  stride 2
        [-1, 1, "Conv", [16, 3, 2]],     # 1  stride 4
        [-1, 1, "Conv", [32, 3, 2]],     # 2  stride 8
        [-1, 1, "Conv", [48, 3, 2]],     # 3  stride 16
    ],
    "decoder": [[[2, 3], 1, "DFINEDecoder", {**DECODER, "hidden_dim": 32, "num_queries": 12, "num_points": [2, 2],
                                             "num_layers": 2, "dim_feedforward": 64, "num_denoising": 12}]],
}
FEATURE = {"pairs": [{"student": 2, "teacher": 3, "loss": "cwd", "tau": 1.0, "weight": 2.0},
                     {"student": 3, "teacher": 5, "loss": "cwd", "tau": 1.0, "weight": 2.0}]}
KINDS = {
    "none": None,
    "logit": {"kd_loss_type": "logit", "logit": {"layers": "all"}},
    "feature": {"kd_loss_type": "feature", "feature": FEATURE},
    "all": {"kd_loss_type": "all", "logit": {"layers": "all"}, "feature": FEATURE},
}


def run_config(data: Path, graph: dict, epochs: int, distill: dict | None) -> dict:
    """DEIM's recipe at 64 px: flip-only augmentation, batch 8, no workers."""
    def split(name, ops, batch):
        return {"dataset": {"type": "coco", "img_folder": str(data / name),
                            "ann_file": str(data / name / "_annotations.coco.json"), "transforms": {"ops": ops}},
                "total_batch_size": batch, "num_workers": 0}

    tensor = [{"type": "ConvertPILImage", "dtype": "float32", "scale": True}]
    train = split("train", [{"type": "RandomHorizontalFlip"}, {"type": "Resize", "size": [64, 64]},
                            {"type": "SanitizeBoundingBoxes", "min_size": 1}, *tensor,
                            {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}], 8)
    train["dataset"]["transforms"].update(policy={"name": "stop_epoch", "ops": ["RandomHorizontalFlip"]}, mosaic_prob=0.0)
    train["collate_fn"] = {"base_size_repeat": None, "mixup_prob": 0.0}
    cfg = {"__include__": [str(REPO / "configs/recipes/deim.yml")], "graph": graph, "imgsz": [64, 64],
           "epochs": epochs, "print_freq": 1000, "plot_train_batch_freq": 0, "checkpoint_freq": 0, "progress_bar": False,
           "optimizer": {"lr": 0.001, "params": [{"params": "^(?=.*(?:norm|bn|bias)).*$", "weight_decay": 0.0}]},
           "ema": {"decay": 0.999, "warmups": 50}, "lr_scheduler": {"lr_gamma": 0.5, "warmup_iter": 20},
           "clip_max_norm": 0.1, "criterion": {"reg_max": 16}, "postprocessor": {"num_top_queries": 30},
           "train_dataloader": train, "val_dataloader": split("val", [{"type": "Resize", "size": [64, 64]}, *tensor], 16)}
    if distill is not None:
        cfg["distill"] = distill
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench_distill")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--kd-weight", type=float, default=1.0, help="distill.weight: factor on every KD term")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = out / "data"
    if not (data / "val" / "_annotations.coco.json").is_file():
        from data.demo import make_demo

        make_demo(data, train=args.train_images, val=24, imgsz=96, seed=0)

    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    teacher_cfg = write_config(run_config(data, TEACHER_GRAPH, args.teacher_epochs, None), out / "teacher.yml")
    teacher_ckpt = out / "teacher" / "last.pth"
    if not teacher_ckpt.is_file():
        started = time.time()
        stats = Solver(load_config(teacher_cfg), device="cpu", seed=0, output_dir=str(out / "teacher")).fit()
        results["teacher"] = {"ap": stats["stats"][0], "ap50": stats["stats"][1], "seconds": time.time() - started}
        results_path.write_text(json.dumps(results, indent=1))

    for kind in args.kinds:
        for seed in args.seeds:
            key = f"{kind}/{seed}"
            if key in results:
                continue
            distill = None if KINDS[kind] is None else {**KINDS[kind], "weight": args.kd_weight}
            cfg_path = write_config(run_config(data, STUDENT_GRAPH, args.epochs, distill), out / f"student_{kind}.yml")
            run_dir = out / f"student_{kind}_seed{seed}"
            started = time.time()
            teacher = {} if KINDS[kind] is None else {"teacher_config": str(teacher_cfg),
                                                       "teacher_weights": str(teacher_ckpt)}
            solver = Solver(load_config(cfg_path), device="cpu", seed=seed, output_dir=str(run_dir), **teacher)
            stats = solver.fit()
            results[key] = {"ap": stats["stats"][0], "ap50": stats["stats"][1], "seconds": time.time() - started}
            results_path.write_text(json.dumps(results, indent=1))
            print(f"{key}: AP {results[key]['ap']:.4f} AP50 {results[key]['ap50']:.4f} ({results[key]['seconds']:.0f}s)")

    table = format_table(results, args.kinds, args.seeds)
    print(table)
    (out / "results.md").write_text(table + "\n")


def format_table(results: dict, kinds, seeds) -> str:
    def mean_std(values):
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"

    teacher = results.get("teacher")
    lines = []
    if teacher:
        lines.append(f"teacher: AP50:95 {teacher['ap']:.4f}, AP50 {teacher['ap50']:.4f}\n")
    lines += ["| student | AP50:95 (mean ± std) | AP50 (mean ± std) | per seed AP50:95 |", "|---|---|---|---|"]
    for kind in kinds:
        runs = [results[f"{kind}/{s}"] for s in seeds if f"{kind}/{s}" in results]
        if not runs:
            continue
        label = "no teacher" if kind == "none" else f"kd_loss_type: {kind}"
        per_seed = ", ".join(f"{r['ap']:.4f}" for r in runs)
        lines.append(f"| {label} | {mean_std([r['ap'] for r in runs])} | {mean_std([r['ap50'] for r in runs])} | "
                     f"{per_seed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
