"""Shared pieces of the trainer tests: tiny demo data and a tiny D-FINE run config (64 px)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_GRAPH = {
    "nc": 3,
    "imgsz": [64, 64],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],     # 0  stride 2
        [-1, 1, "Conv", [16, 3, 2]],    # 1  stride 4
        [-1, 1, "Conv", [32, 3, 2]],    # 2  stride 8
        [-1, 1, "Conv", [32, 3, 2]],    # 3  stride 16
    ],
    "decoder": [
        [[2, 3], 1, "DFINEDecoder", {"hidden_dim": 32, "num_queries": 12, "feat_strides": [8, 16], "num_levels": 2,
                                     "num_points": [2, 2], "nhead": 4, "num_layers": 2, "dim_feedforward": 64,
                                     "num_denoising": 6, "reg_max": 16}],
    ],
}


def make_data(root: Path, train: int = 16, val: int = 8) -> Path:
    from data.demo import make_demo

    make_demo(root, train=train, val=val, imgsz=96, seed=0)
    return root


def drop_category(root: Path, split: str, category_id: int, out: Path) -> Path:
    """A copy of a split's annotations without one category (a dataset with a different class count)."""
    ann = json.loads((root / split / "_annotations.coco.json").read_text())
    ann["categories"] = [c for c in ann["categories"] if c["id"] != category_id]
    ann["annotations"] = [a for a in ann["annotations"] if a["category_id"] != category_id]
    out.write_text(json.dumps(ann))
    return out


def tiny_config(data_root: Path, **overrides) -> dict:
    """The DEIM recipe shrunk to seconds: 64 px, batch 4, plain augmentation, no workers."""
    transforms_train = {"ops": [{"type": "RandomHorizontalFlip"}, {"type": "Resize", "size": [64, 64]},
                                {"type": "SanitizeBoundingBoxes", "min_size": 1},
                                {"type": "ConvertPILImage", "dtype": "float32", "scale": True},
                                {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}],
                        "policy": {"name": "stop_epoch", "ops": ["RandomHorizontalFlip"]}, "mosaic_prob": 0.0}
    transforms_val = {"ops": [{"type": "Resize", "size": [64, 64]},
                              {"type": "ConvertPILImage", "dtype": "float32", "scale": True}]}
    cfg = {
        "__include__": [str(REPO / "configs/recipes/deim.yml")],
        "graph": TINY_GRAPH,
        "imgsz": [64, 64],
        "epochs": 3,
        "print_freq": 1,
        "plot_train_batch_freq": 1,
        "checkpoint_freq": 0,
        "optimizer": {"lr": 0.001, "params": [{"params": "backbone", "lr": 0.0005}]},
        "ema": {"decay": 0.99, "warmups": 10},
        "lr_scheduler": {"warmup_iter": 4},
        "criterion": {"reg_max": 16},
        "postprocessor": {"num_top_queries": 30},
        "progress_bar": False,
        "train_dataloader": {
            "dataset": {"type": "coco", "img_folder": str(data_root / "train"),
                        "ann_file": str(data_root / "train/_annotations.coco.json"), "transforms": transforms_train},
            "collate_fn": {"base_size_repeat": None, "mixup_prob": 0.0},
            "total_batch_size": 4, "num_workers": 0},
        "val_dataloader": {
            "dataset": {"type": "coco", "img_folder": str(data_root / "val"),
                        "ann_file": str(data_root / "val/_annotations.coco.json"), "transforms": transforms_val},
            "total_batch_size": 4, "num_workers": 0},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def subprocess_env() -> dict:
    """One thread per process: the test machine has two cores shared by everything."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def free_port() -> int:
    """A TCP port free now, for a torchrun rendezvous: a fixed one collides with other test runs
    (and pytest-xdist workers) on the machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
