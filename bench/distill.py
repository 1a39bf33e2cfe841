"""Does distillation help? A teacher, a self-distillation check and a small student with and without
each kind of distillation, on a synthetic set harder than the demo (CPU; resumable).

    python -m bench.distill [--out outputs/bench_distill] [--teacher-epochs 50] [--self-epochs 50]
                            [--epochs 12] [--seeds 0 1 2] [--kinds none logit cwd mgd mimic ickd sp all]
                            [--threads 1]

1. data: data.demo with 6 classes, up to 8 shapes per image, shapes of 8-35% of the side (many below
   32 px, COCO's "small"), 6 unlabelled clutter marks per image; 96 px images.
2. teacher: a C2f backbone, a 3-layer D-FINE decoder (hidden 64, 30 queries), trained long enough to
   teach (the bench reports whether it reached AP50:95 0.5).
3. self-distillation: the teacher's architecture from scratch, trained by the logit terms alone (every
   ground-truth weight 0; the proposals and the denoising queries learn from the teacher too, the
   class term a plain BCE): the share of the teacher's AP that the logit path transfers.
4. student: a 4-conv backbone and a 2-layer decoder (hidden 32, 20 queries), the same epochs with
   no teacher, logit distillation, feature distillation with each loss on two backbone pairs, and
   logit + CWD (`all`), over several seeds.

Every finished run is recorded in OUT/results.json and skipped next time; an interrupted run
resumes from its last.pth. Prints a markdown table (mean ± std of AP50:95 and AP50, the gap to no
teacher, and how far each student's predictions end from the teacher's: `to_teacher`) and writes it
to OUT/results.md."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from core.errors import cli_main
from engine.config import load_config
from engine.solver import Solver

REPO = Path(__file__).resolve().parents[1]
IMGSZ = 96
DATA = {"classes": 6, "max_objects": 8, "sizes": (0.08, 0.35), "clutter": 6}
NC = DATA["classes"]


def decoder(hidden: int, queries: int, layers: int, points: int, denoising: int) -> dict:
    return {"feat_strides": [8, 16], "num_levels": 2, "nhead": 4, "reg_max": 16, "activation": "silu",
            "mlp_act": "silu", "hidden_dim": hidden, "num_queries": queries, "num_points": [points, points],
            "num_layers": layers, "dim_feedforward": 2 * hidden, "num_denoising": denoising}


TEACHER_GRAPH = {
    "nc": NC, "imgsz": [IMGSZ, IMGSZ],
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],         # 0  stride 2
        [-1, 1, "Conv", [32, 3, 2]],         # 1  stride 4
        [-1, 1, "Conv", [64, 3, 2]],         # 2  stride 8
        [-1, 1, "C2f", [64, 1, True]],       # 3
        [-1, 1, "Conv", [128, 3, 2]],        # 4  stride 16
        [-1, 1, "C2f", [128, 1, True]],      # 5
    ],
    "decoder": [[[3, 5], 1, "DFINEDecoder", decoder(64, 30, 3, 4, 20)]],
}
STUDENT_GRAPH = {
    "nc": NC, "imgsz": [IMGSZ, IMGSZ],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],          # 0  stride 2
        [-1, 1, "Conv", [16, 3, 2]],         # 1  stride 4
        [-1, 1, "Conv", [32, 3, 2]],         # 2  stride 8
        [-1, 1, "Conv", [48, 3, 2]],         # 3  stride 16
    ],
    "decoder": [[[2, 3], 1, "DFINEDecoder", decoder(32, 20, 2, 2, 12)]],
}
# student row -> teacher row at the same stride (8 and 16); the adapters bridge 32 -> 64 and 48 -> 128
PAIRS = [{"student": 2, "teacher": 3}, {"student": 3, "teacher": 5}]
# corner distillation (ld) off: in the KD-only check it slowed the boxes (3 epochs: AP 0.0048 with it, 0.0101
# without; see the README)
LOGIT = {"kd_loss_type": "logit", "logit": {"layers": "all", "weights": {"ld": 0.0}}}
# per loss: the weight (and options) that give the term's gradient on the student about a third of
# the ground-truth loss's, measured on a half-trained student (the raw scales differ by orders of magnitude)
FEATURE_LOSSES = {"cwd": {"weight": 1.0, "tau": 1.0}, "mgd": {"weight": 1.0, "alpha": 4e-3}, "mimic": {"weight": 4.0},
                  "ickd": {"weight": 4.0}, "sp": {"weight": 15.0}}


def feature(loss: str) -> dict:
    return {"pairs": [{**pair, "loss": loss, **FEATURE_LOSSES[loss]} for pair in PAIRS]}


KINDS = {
    "none": None,
    "logit": LOGIT,
    **{loss: {"kd_loss_type": "feature", "feature": feature(loss)} for loss in FEATURE_LOSSES},
    "all": {**LOGIT, "kd_loss_type": "all", "feature": feature("cwd")},
}
# the self-distillation run: the logit terms only, every ground-truth weight 0; with no ground truth the
# first layer's head and the encoder's proposals (which select the queries) learn from the teacher too, and
# the denoising queries learn the teacher's answers to them; plain BCE on the class scores (quality focal
# held the student's scores on the teacher's confident queries at 0.43 against its 0.81; 20 epochs: 61 % of
# the teacher's AP with it, 81 % without, the same without the denoising queries; 50 epochs: 93 %)
SELF = {"kd_loss_type": "logit",
        "logit": {"layers": "all", "proposals": True, "denoising": True, "cls_gamma": 0.0, "weights": {"ld": 0.0}}}
NO_GROUND_TRUTH = {"loss_mal": 0, "loss_bbox": 0, "loss_giou": 0, "loss_fgl": 0, "loss_ddf": 0}


def run_config(data: Path, graph: dict, epochs: int, distill: dict | None = None, criterion: dict | None = None) -> dict:
    """DEIM's recipe at 96 px: flip-only augmentation, batch 16, no workers."""
    def split(name, ops, batch):
        return {"dataset": {"type": "coco", "img_folder": str(data / name),
                            "ann_file": str(data / name / "_annotations.coco.json"), "transforms": {"ops": ops}},
                "total_batch_size": batch, "num_workers": 0}

    tensor = [{"type": "ConvertPILImage", "dtype": "float32", "scale": True}]
    size = [IMGSZ, IMGSZ]
    train = split("train", [{"type": "RandomHorizontalFlip"}, {"type": "Resize", "size": size},
                            {"type": "SanitizeBoundingBoxes", "min_size": 1}, *tensor,
                            {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}], 16)
    train["dataset"]["transforms"].update(policy={"name": "stop_epoch", "ops": ["RandomHorizontalFlip"]}, mosaic_prob=0.0)
    train["collate_fn"] = {"base_size_repeat": None, "mixup_prob": 0.0}
    cfg = {"__include__": [str(REPO / "configs/recipes/deim.yml")], "graph": graph, "imgsz": size,
           "epochs": epochs, "print_freq": 1000, "plot_train_batch_freq": 0, "checkpoint_freq": 0, "progress_bar": False,
           "optimizer": {"lr": 0.002, "params": [{"params": "^(?=.*(?:norm|bn|bias)).*$", "weight_decay": 0.0}]},
           "ema": {"decay": 0.999, "warmups": 100}, "lr_scheduler": {"lr_gamma": 0.5, "warmup_iter": 50},
           "clip_max_norm": 0.1, "criterion": {"reg_max": 16, **(criterion or {})},
           "postprocessor": {"num_top_queries": 30}, "train_dataloader": train,
           "val_dataloader": split("val", [{"type": "Resize", "size": size}, *tensor], 32)}
    if distill is not None:
        cfg["distill"] = distill
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Bench:
    """The runs, each recorded in results.json once finished (so a rerun skips it)."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / "results.json"
        self.results = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, key: str, cfg: dict, seed: int, **teacher) -> dict:
        """Train (or skip when recorded) one run; every run but the teacher's is also measured against
        the teacher (`to_teacher`), the runs without one included."""
        name = key.replace("/", "_seed")
        if key not in self.results:
            cfg_path = write_config(cfg, self.out / f"{name}.yml")
            started = time.time()
            solver = Solver(load_config(cfg_path), device="cpu", seed=seed, output_dir=str(self.out / name),
                            auto_resume=True, **teacher)
            try:
                stats = solver.fit()
            finally:
                solver.close()
            self.results[key] = {"ap": stats["stats"][0], "ap50": stats["stats"][1],
                                 "seconds": round(time.time() - started)}
            print(f"{key}: AP50:95 {self.results[key]['ap']:.4f}  AP50 {self.results[key]['ap50']:.4f} "
                  f"({self.results[key]['seconds']}s)", flush=True)
        if key != "teacher" and "to_teacher" not in self.results[key]:
            self.results[key]["to_teacher"] = to_teacher(self.out / name / "last.pth", self.out / "teacher" / "last.pth",
                                                         self.out / "data" / "val")
        self.path.write_text(json.dumps(self.results, indent=1))
        return self.results[key]


@torch.no_grad()
def to_teacher(student_weights: Path, teacher_weights: str, val: Path) -> dict:
    """How far the student's final predictions on the validation images are from the teacher's: the
    logit terms' box L1 and class term (quality focal: 0 where they agree) between queries matched per
    image, weighted by the teacher's confidence. Smaller: the student's outputs moved toward the teacher's."""
    from PIL import Image

    from engine.distill import logit_terms
    from models.factory import load_detector

    student, _, _ = load_detector(student_weights)
    teacher, _, _ = load_detector(teacher_weights)
    files = sorted(val.glob("*.jpg"))
    sums = {"bbox": 0.0, "cls": 0.0}
    for start in range(0, len(files), 32):
        images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB")))
                              for f in files[start:start + 32]]).permute(0, 3, 1, 2).float() / 255
        terms = logit_terms(student(images), teacher(images), {},
                            {"cls": 1.0, "bbox": 1.0, "giou": 1.0, "ld": 0.0})
        for k in sums:
            sums[k] += terms[f"loss_kd_{k}"].item() * len(images) / len(files)
    return {k: round(v, 4) for k, v in sums.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench_distill")
    parser.add_argument("--teacher-epochs", type=int, default=50)
    parser.add_argument("--self-epochs", type=int, default=None, help="self-distillation epochs (default: the teacher's)")
    parser.add_argument("--epochs", type=int, default=12, help="student epochs (every kind the same)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--val-images", type=int, default=128)
    parser.add_argument("--skip-self", action="store_true", help="leave out the self-distillation run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = out / "data"
    if not (data / "val" / "_annotations.coco.json").is_file():
        from data.demo import make_demo

        make_demo(data, train=args.train_images, val=args.val_images, imgsz=IMGSZ, seed=0, **DATA)
    bench = Bench(out)

    bench.run("teacher", run_config(data, TEACHER_GRAPH, args.teacher_epochs), seed=0)
    teacher = {"teacher_config": str(out / "teacher.yml"), "teacher_weights": str(out / "teacher" / "last.pth")}
    for kind in args.kinds:
        for seed in args.seeds:
            bench.run(f"{kind}/{seed}", run_config(data, STUDENT_GRAPH, args.epochs, KINDS[kind]), seed,
                      **({} if KINDS[kind] is None else teacher))
    if not args.skip_self:
        bench.run("self", run_config(data, TEACHER_GRAPH, args.self_epochs or args.teacher_epochs, SELF,
                                     {"weight_dict": NO_GROUND_TRUTH}), seed=0, **teacher)
    table = format_table(bench.results, args.kinds, args.seeds)
    print(table)
    (out / "results.md").write_text(table + "\n")


def format_table(results: dict, kinds, seeds) -> str:
    def mean_std(values):
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    lines = []
    teacher, own = results.get("teacher"), results.get("self")
    if teacher:
        lines.append(f"teacher: AP50:95 {teacher['ap']:.4f}, AP50 {teacher['ap50']:.4f} "
                     f"({'reaches' if teacher['ap'] >= 0.5 else 'below'} the 0.5 a teacher needs here)")
    if teacher and own:
        lines.append(f"self-distillation (teacher's graph from scratch, logit terms only): AP50:95 {own['ap']:.4f}, "
                     f"{own['ap'] / max(teacher['ap'], 1e-9):.0%} of the teacher's")
    lines += ["", "| student | AP50:95 (mean ± std) | gap to no teacher | AP50 (mean ± std) | to the teacher: box L1, "
              "class | per seed AP50:95 |", "|---|---|---|---|---|---|"]
    base = [results[f"none/{s}"]["ap"] for s in seeds if f"none/{s}" in results]
    for kind in kinds:
        runs = [results[f"{kind}/{s}"] for s in seeds if f"{kind}/{s}" in results]
        if not runs:
            continue
        label = {"none": "no teacher", "logit": "logit", "all": "logit + feature (cwd)"}.get(kind, f"feature ({kind})")
        (ap, ap_std), (ap50, ap50_std) = mean_std([r["ap"] for r in runs]), mean_std([r["ap50"] for r in runs])
        gap = f"{ap - statistics.mean(base):+.4f}" if base and kind != "none" else ""
        if gap and len(runs) > 1 and len(base) > 1:   # does the gap exceed both standard deviations?
            gap += " (> both std)" if abs(ap - statistics.mean(base)) > max(ap_std, mean_std(base)[1]) else ""
        near = [r["to_teacher"] for r in runs if "to_teacher" in r]
        near = (f"{statistics.mean(n['bbox'] for n in near):.3f}, {statistics.mean(n['cls'] for n in near):.3f}"
                if near else "")
        per_seed = ", ".join(f"{r['ap']:.4f}" for r in runs)
        lines.append(f"| {label} | {ap:.4f} ± {ap_std:.4f} | {gap} | {ap50:.4f} ± {ap50_std:.4f} | {near} | {per_seed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    cli_main(main)
