"""The hardening corpus (issue #16): inputs a careless or hostile user gives, beyond the broken files of
tests/test_corpus.py. Each case runs a command line in-process under its own `cli_main` and checks
the exit code, the message (what the user sees, and the `fix:` line where the command stops), that
no traceback is shown, and, for inputs that must not lose data, that nothing was lost.

Classes (README Troubleshooting renders them with the rest of the corpus):
  config     a run config or `-u` override that is wrong: typos anywhere, wrong types, official keys,
             YAML bombs, non-UTF-8 text, a checkpoint given as the config
  command    a wrong command-line flag (devices, sizes, thresholds, swapped files)
  labels     a dataset whose labels would train or score the wrong classes (category mapping across
             splits, Ultralytics names, missing labels, non-finite predictions)
  files      a command that could lose data (a destination inside the source, two runs on one folder,
             a killed run, a full disk, Ctrl-C)
  resources  inputs past a resource limit (huge images, deep nesting), checkpoints of the wrong kind
"""
from __future__ import annotations

import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import distill
import predict
import train
from analyze import config as config_cli
from analyze import dataset as dataset_cli
from analyze import info
from analyze import tide as tide_cli
from data import yolo2coco
from tests.engine_helpers import REPO, TINY_GRAPH, drop_category, make_data, tiny_config, write_config
from tests.test_corpus import ANN, Case, check_message, copy_demo, edit_annotations, run_cli

pytestmark = pytest.mark.corpus


@dataclass
class Context:
    demo: Path          # 4 train + 2 val demo images (ids 1..3), read-only: copy before editing
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def config(self, cfg: dict | None = None, name: str = "run.yml", **overrides) -> Path:
        return write_config(cfg or tiny_config(self.demo, epochs=1, **overrides), self.tmp / name)

    def train(self, *argv, cfg: Path | None = None):
        cfg = cfg or self.config()
        return run_cli(train.main, ["-c", cfg, "-d", "cpu", "--output-dir", self.tmp / "out", "--quiet", *argv])


CASES: list[Case] = []
RUNNERS = {}


def case(id, group, see, do="", names=(), stops=True, warns=False):
    """Register a runner `run(ctx) -> (exit code, text[, path that must be named])` for one case."""
    def wrap(run):
        CASES.append(Case(id, group, see, do, tuple(names), stops, warns))
        RUNNERS[id] = run
        return run
    return wrap


FIX_VALUE = "fix the value in the config file (or the -u override)"


# ------------------------------------------------------------------------------------ config: wrong types
def typed(id, override, see):
    case(id, "config", see, FIX_VALUE, (override.split("=")[0],))(lambda ctx: ctx.train("-u", override))


typed("u_epochs_text", "epochs=abc", "epochs: must be an integer (> 0), got 'abc'")
typed("u_epochs_zero", "epochs=0", "epochs: must be an integer (> 0), got 0")
typed("u_lr_negative", "optimizer.lr=-1", "optimizer.lr: must be a number (> 0), got -1")
typed("u_batch_zero", "train_dataloader.total_batch_size=0", "must be an integer (> 0), or null (~), got 0")
typed("u_workers_text", "train_dataloader.num_workers=two", "num_workers: must be an integer (>= 0), got 'two'")
typed("u_amp_text", "use_amp=maybe", "use_amp: must be true or false, got 'maybe'")
typed("u_imgsz_huge", "imgsz=320000", "imgsz: must be an integer (> 0, <= 8192)")
typed("u_imgsz_zero", "imgsz=0", "imgsz: must be an integer (> 0, <= 8192)")
typed("u_clip_negative", "clip_max_norm=-1", "clip_max_norm: must be a number (>= 0), got -1")
typed("u_ema_decay_big", "ema.decay=1.5", "ema.decay: must be a number (> 0.0, < 1.0), got 1.5")
typed("u_seed_float", "seed=1.5", "seed: must be an integer, got 1.5")
typed("u_amp_dtype", "amp_dtype=int8", "amp_dtype: must be one of 'float16', 'bfloat16', or null (~), got 'int8'")
typed("u_threshold_big", "eval_score_threshold=2", "eval_score_threshold: must be a number (>= 0.0, <= 1.0)")
typed("u_matcher_alpha_text", "criterion.matcher.alpha=x", "HungarianMatcher.alpha must be a number, got 'x'")
typed("u_flip_p_text", "train_dataloader.dataset.transforms.ops=[{type: RandomHorizontalFlip, p: high}]",
      "RandomHorizontalFlip.p must be a number, got 'high'")
typed("u_ema_list", "ema=[0.9]", "ema: must be a mapping, or null (~), got [0.9]")
typed("u_params_dict", "optimizer.params={params: backbone}", "optimizer.params: must be a list of mappings")
typed("u_scheduler_unknown", "lr_scheduler.type=Cosine", "lr_scheduler.type: must be one of 'MultiStepLR', 'FlatCosine'")


# ---------------------------------------------------------------------------------- config: unknown keys
def typo(id, override, where, nearest):
    case(id, "config", f"{where}: unknown key", f"did you mean `{nearest}`?")(lambda ctx: ctx.train("-u", override))


typo("typo_top_level", "clip_max_nrom=0.1", "clip_max_nrom", "clip_max_norm")
typo("typo_total_batch", "train_dataloader.total_batch_szie=8", "train_dataloader.total_batch_szie", "total_batch_size")
typo("typo_ema", "ema.decai=0.9", "ema.decai", "decay")
typo("typo_warmup", "lr_scheduler.warmup_iters=10", "lr_scheduler.warmup_iters", "warmup_iter")
typo("typo_optimizer_group", "optimizer.params=[{params: backbone, lrr: 0.1}]", "optimizer.params[0].lrr", "lr")
typo("typo_collate", "train_dataloader.collate_fn.mixup_prb=0.5", "train_dataloader.collate_fn.mixup_prb",
     "mixup_prob")
typo("typo_dataset", "train_dataloader.dataset.img_foldr=x", "train_dataloader.dataset.img_foldr", "img_folder")
typo("typo_criterion", "criterion.gama=1.5", "criterion.gama", "gamma")
typo("typo_postprocessor", "postprocessor.num_top_querys=10", "postprocessor.num_top_querys", "num_top_queries")
typo("typo_transform_arg", "val_dataloader.dataset.transforms.ops=[{type: Resize, sizee: 64}]",
     "val_dataloader.dataset.transforms.ops[0].sizee", "size")
typo("typo_distill", "distill={kd_loss_typ: logit}", "distill.kd_loss_typ", "kd_loss_type")


def unknown_name(id, override, see, hint):
    case(id, "config", see, hint)(lambda ctx: ctx.train("-u", override))


unknown_name("unknown_transform", "val_dataloader.dataset.transforms.ops=[{type: RandomFlipp}]",
             "unknown transform 'RandomFlipp'", "did you mean")
unknown_name("unknown_criterion", "criterion.type=DEIMCriterio", "unknown criterion type 'DEIMCriterio'",
             "did you mean DEIMCriterion")
unknown_name("unknown_optimizer", "optimizer.type=AdamWW", "unknown optimizer type 'AdamWW'", FIX_VALUE)
unknown_name("unknown_dataset_type", "train_dataloader.dataset.type=voc", "unknown dataset type 'voc'", "known:")
unknown_name("unknown_policy_op", "train_dataloader.dataset.transforms.policy.ops=[Mosaic]",
             "policy op 'Mosaic' is not among the ops", "name ops by their `type`")
unknown_name("distill_kind_unknown", "distill={kd_loss_type: logits}", "distill.kd_loss_type: must be one of",
             FIX_VALUE)


@case("batch_contradiction", "config", "train_dataloader.batch_size 3 contradicts total_batch_size 4",
      "set only train_dataloader.total_batch_size (the official key)")
def _(ctx):
    return ctx.train("-u", "train_dataloader.batch_size=3")


@case("missing_criterion", "config", "missing `criterion` section", "include a recipe (configs/recipes/)")
def _(ctx):
    cfg = tiny_config(ctx.demo, epochs=1)
    cfg.pop("__include__")
    cfg.pop("criterion")
    return ctx.train(cfg=ctx.config(cfg))


# ----------------------------------------------------------------------------------- config: the files
@case("official_spelling", "config", "official key `epoches` read as `epochs`", "nothing: it is read under our name",
      stops=False)
def _(ctx):
    return run_cli(config_cli.main, ["-c", ctx.config(), "-u", "epoches=62", "num_classes=3"])


@case("official_named_section", "config", "official `criterion: DEIMCriterion` read as `criterion.type: DEIMCriterion`",
      "nothing: the official layout is read as ours", stops=False)
def _(ctx):
    cfg = tiny_config(ctx.demo, epochs=1)
    cfg["criterion"], cfg["DEIMCriterion"] = "DEIMCriterion", {"reg_max": 16}
    return run_cli(config_cli.main, ["-c", ctx.config(cfg)])


@case("official_network_section", "config", "official network section `HybridEncoder`",
      "the network is the graph file (`graph:`)")
def _(ctx):
    return ctx.train(cfg=ctx.config(HybridEncoder={"hidden_dim": 256}))


@case("graph_path_typo", "config", "graph file not found: graphs/deim/deim-q.yaml",
      "did you mean graphs/deim/deim-", names=("graph",))
def _(ctx):
    return ctx.train("-u", "graph=graphs/deim/deim-q.yaml")


@case("config_is_checkpoint", "config", "this is a binary file (a checkpoint or an archive?), not a YAML config",
      "pass the .yml file here; weights go to -r / -t (train.py) or -tw (distill.py)")
def _(ctx):
    path = ctx.tmp / "weights.yml"
    torch.save({"model": {}}, path)
    return (*ctx.train(cfg=path), path)


@case("config_not_utf8", "config", "not UTF-8 text", "save the file as UTF-8")
def _(ctx):
    path = ctx.tmp / "gbk.yml"
    path.write_bytes("# 配置\nepochs: 1\n".encode("gbk"))
    return (*ctx.train(cfg=path), path)


@case("config_not_mapping", "config", "a config file must be a mapping of keys to values", "write `key: value` lines")
def _(ctx):
    path = ctx.tmp / "list.yml"
    path.write_text("- epochs: 1\n")
    code, text = ctx.train(cfg=path)
    return code, text, path


@case("config_missing", "config", "config file not found", "pass -c with a path to a .yml run config")
def _(ctx):
    return ctx.train(cfg=ctx.tmp / "nope.yml")


@case("update_not_key_value", "config", "override 'epochs' is not of the form key=value",
      "write e.g. -u train_dataloader.batch_size=8 epochs=12")
def _(ctx):
    return ctx.train("-u", "epochs")


@case("update_through_scalar", "config", "cannot set epochs.x: epochs is 'int'", "set epochs itself")
def _(ctx):
    return ctx.train("-u", "epochs.x=1")


@case("scale_negative_depth", "config", "scale 'n' must have a positive depth, width and max_channels",
      "e.g. `n: [0.33, 0.25, 1024]`")
def _(ctx):
    graph = dict(TINY_GRAPH, scales={"n": [-0.5, 0.25, 1024]})
    return ctx.train(cfg=ctx.config(graph=graph))


# ----------------------------------------------------------------------------------------- command flags
@case("device_unknown", "command", "unknown device 'tpu'", "use cpu, cuda or cuda:N")
def _(ctx):
    return run_cli(train.main, ["-c", ctx.config(), "-d", "tpu"])


@case("device_missing_gpu", "command", "device 'cuda:99'", "")
def _(ctx):
    return run_cli(train.main, ["-c", ctx.config(), "-d", "cuda:99"])


@case("resume_and_tune", "command", "-r and -t cannot be combined", "-r continues a run; -t starts a new one")
def _(ctx):
    return ctx.train("-r", "a.pth", "-t", "b.pth")


@case("test_only_without_weights", "command", "--test-only needs the weights to evaluate",
      "add -r path/to/best.pth")
def _(ctx):
    return ctx.train("--test-only")


@case("teacher_config_without_weights", "command", "-tc and -tw go together", "the teacher's config and its weights")
def _(ctx):
    return run_cli(distill.main, ["-sc", ctx.config(), "-tc", ctx.config(name="t.yml"), "-d", "cpu"])


@case("teacher_files_swapped", "command", "this is a binary file (a checkpoint or an archive?), not a YAML config",
      "weights go to -r / -t (train.py) or -tw (distill.py)")
def _(ctx):
    weights = ctx.tmp / "teacher.pth"
    torch.save({"model": {}}, weights)
    student = ctx.config(distill={"kd_loss_type": "logit"})
    argv = ["-sc", student, "-tc", weights, "-tw", ctx.config(name="t.yml"), "-d", "cpu",
            "--output-dir", ctx.tmp / "out", "--quiet"]
    return (*run_cli(distill.main, argv), weights)


@case("distill_without_teacher", "command", "kd_loss_type logit needs a teacher",
      "pass -tc TEACHER_CONFIG -tw TEACHER_WEIGHTS")
def _(ctx):
    cfg = ctx.config(distill={"kd_loss_type": "logit"})
    return run_cli(distill.main, ["-sc", cfg, "-d", "cpu", "--output-dir", ctx.tmp / "out", "--quiet"])


@case("info_imgsz_zero", "command", "imgsz must be an int or [height, width] of positive sides up to 8192",
      "e.g. 640, or [384, 640]")
def _(ctx):
    return run_cli(info.main, [REPO / "graphs/examples/tiny.yaml", "--imgsz", "0"])


@case("info_imgsz_huge", "command", "got [320000, 320000]", "e.g. 640, or [384, 640]")
def _(ctx):
    return run_cli(info.main, [REPO / "graphs/examples/tiny.yaml", "--imgsz", "320000"])


@case("predict_threshold_out_of_range", "command", "the score threshold must be in [0, 1], got 2.0", "e.g. -t 0.4")
def _(ctx):
    return run_cli(predict.main, ["-i", ctx.demo / "val", "-t", "2"])


@case("predict_input_missing", "command", "input not found", "an image, a video or a folder of them")
def _(ctx):
    return run_cli(predict.main, ["-c", ctx.config(), "-r", "x.pth", "-i", ctx.tmp / "nope"])


@case("predict_one_file_for_many", "command", "names one image, but the input holds", "give -o a folder")
def _(ctx):
    return run_cli(predict.main, ["-c", ctx.config(), "-r", "x.pth", "-i", ctx.demo / "val", "-o", ctx.tmp / "a.jpg"])


@case("tide_files_swapped", "command", "a COCO annotation file is a mapping", "predictions files are lists")
def _(ctx):
    predictions = ctx.tmp / "predictions.json"
    predictions.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9}]))
    return (*run_cli(tide_cli.main, ["--gt", predictions, "--pred", ctx.demo / "val" / ANN]), predictions)


@case("tide_prediction_malformed", "command", "detection 0 is not {image_id, category_id, bbox: [x, y, w, h], score}",
      "pass a COCO results file")
def _(ctx):
    predictions = ctx.tmp / "predictions.json"
    predictions.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 4, 4]}]))
    return run_cli(tide_cli.main, ["--gt", ctx.demo / "val" / ANN, "--pred", predictions])


@case("dataset_command_on_predictions", "command", "a COCO annotation file is a mapping",
      "pass the annotation file")
def _(ctx):
    predictions = ctx.tmp / "predictions.json"
    predictions.write_text("[]")
    return (*run_cli(dataset_cli.main, [predictions]), predictions)


# ------------------------------------------------------------------------------- labels: silent wrong classes
def two_split_config(ctx, train_ann: Path | None = None, val_ann: Path | None = None, **overrides) -> Path:
    cfg = tiny_config(ctx.demo, epochs=1, **overrides)
    if train_ann:
        cfg["train_dataloader"]["dataset"]["ann_file"] = str(train_ann)
    if val_ann:
        cfg["val_dataloader"]["dataset"]["ann_file"] = str(val_ann)
    return ctx.config(cfg)


@case("train_lacks_a_category", "labels", "3 classes (the union of the splits' categories)",
      "nothing: every split and the checkpoint share one mapping", stops=False)
def _(ctx):
    train_ann = drop_category(ctx.demo, "train", 3, ctx.tmp / "train.json")
    code, text = ctx.train(cfg=two_split_config(ctx, train_ann=train_ann))
    state = torch.load(ctx.tmp / "out" / "last.pth", weights_only=True)
    assert state["meta"]["category_ids"] == [1, 2, 3] and state["meta"]["nc"] == 3  # val's class 3 keeps its label
    return code, text


@case("category_names_disagree", "labels", "is 'square' in one split and 'box' in another",
      "give every split the same categories (ids and names), or set `classes:`")
def _(ctx):
    root = copy_demo(ctx.demo, ctx.tmp)
    val = root / "val" / ANN
    coco = json.loads(val.read_text())
    coco["categories"] = [dict(c, name="box") if c["name"] == "square" else c for c in coco["categories"]]
    val.write_text(json.dumps(coco))
    return ctx.train(cfg=ctx.config(tiny_config(root, epochs=1)))


@case("validation_set_all_crowd", "labels", "the validation set has no objects to score",
      "validate on images with annotated objects")
def _(ctx):
    """COCO AP is -1 without a non-crowd object: every epoch would print it and keep any best.pth."""
    root = copy_demo(ctx.demo, ctx.tmp)
    val = root / "val" / ANN
    coco = json.loads(val.read_text())
    coco["annotations"] = [dict(a, iscrowd=1) for a in coco["annotations"]]
    val.write_text(json.dumps(coco))
    return ctx.train(cfg=ctx.config(tiny_config(root, epochs=1)))


@case("one_file_under_two_ids", "labels", "two image ids name the same file", "fix the annotation file")
def _(ctx):
    root = copy_demo(ctx.demo, ctx.tmp)
    val = root / "val" / ANN
    coco = json.loads(val.read_text())
    coco["images"][1]["file_name"] = coco["images"][0]["file_name"]
    val.write_text(json.dumps(coco))
    return ctx.train(cfg=ctx.config(tiny_config(root, epochs=1)))


@case("test_only_unknown_category", "labels", "this split's categories disagree with the checkpoint",
      "give every split the same categories")
def _(ctx):
    two = [drop_category(ctx.demo, split, 3, ctx.tmp / f"{split}.json") for split in ("train", "val")]
    ctx.train(cfg=two_split_config(ctx, *two))                      # a 2-class run
    return run_cli(train.main, ["-c", ctx.config(), "-d", "cpu", "--test-only", "-r", ctx.tmp / "out" / "last.pth",
                                "--output-dir", ctx.tmp / "eval", "--quiet"])


@case("nonfinite_predictions", "labels", "predictions with a non-finite box or score were not scored",
      "nothing: they count as missed, not as hits", stops=False, warns=True)
def _(ctx):
    ctx.train()
    state = torch.load(ctx.tmp / "out" / "last.pth", weights_only=True)
    for weights in (state["model"], state["ema"]["module"]):
        for key, value in weights.items():
            if value.is_floating_point():
                value.fill_(float("nan"))
    torch.save(state, ctx.tmp / "nan.pth")
    code, text = run_cli(train.main, ["-c", ctx.config(), "-d", "cpu", "--test-only", "-r", ctx.tmp / "nan.pth",
                                      "--output-dir", ctx.tmp / "eval", "--quiet"])
    stats = json.loads((ctx.tmp / "eval" / "test_stats.json").read_text())
    assert stats["stats"][0] == 0.0 and stats["stats"][8] == 0.0 and stats["dropped"] > 0   # no AP, no recall
    return code, text


def yolo_dataset(ctx, names, classes=(0, 1, 2), labels=True) -> Path:
    root = ctx.tmp / "yolo"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        if labels:
            (root / split / "labels").mkdir()
        for i, image in enumerate(sorted((ctx.demo / split).glob("*.jpg"))):
            shutil.copy(image, root / split / "images" / image.name)
            if labels:
                cls = classes[i % len(classes)]
                (root / split / "labels" / f"{image.stem}.txt").write_text(f"{cls} 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "train/images", "val": "val/images",
                                                    "names": names}, allow_unicode=True))
    return root / "data.yaml"


def yolo_config(ctx, data_yaml: Path) -> Path:
    cfg = tiny_config(ctx.demo, epochs=1)
    for key, split in (("train_dataloader", "train"), ("val_dataloader", "val")):
        transforms = cfg[key]["dataset"]["transforms"]
        cfg[key]["dataset"] = {"type": "yolo", "data_yaml": str(data_yaml), "split": split, "transforms": transforms}
    return ctx.config(cfg)


@case("yolo_names_one_based", "labels", "labels 0..2 are category ids 1='a', 2='b', 3='c'",
      "nothing: class ids keep their names", stops=False)
def _(ctx):
    code, text = ctx.train(cfg=yolo_config(ctx, yolo_dataset(ctx, {1: "a", 2: "b", 3: "c"}, classes=(1, 2, 3))))
    return code, text


@case("yolo_names_gapped", "labels", "labels 0..1 are category ids 0='a', 5='b'", "nothing: class ids keep their names",
      stops=False)
def _(ctx):
    return ctx.train(cfg=yolo_config(ctx, yolo_dataset(ctx, {0: "a", 5: "b"}, classes=(0, 5))))


@case("yolo_names_string", "labels", "`names` must be a list or a mapping of class names, got str 'cat'",
      "write `names: [cat]` for one class")
def _(ctx):
    return ctx.train(cfg=yolo_config(ctx, yolo_dataset(ctx, "cat", classes=(0,))))


@case("yolo_labels_missing", "labels", "images has a label file", "labels live in a `labels/` folder beside `images/`")
def _(ctx):
    return ctx.train(cfg=yolo_config(ctx, yolo_dataset(ctx, ["a", "b", "c"], labels=False)))


@case("yolo_class_not_in_names", "labels", "class 7 is not in data.yaml's names (ids [0, 1, 2])",
      "fix the label, or add the class to `names`")
def _(ctx):
    return ctx.train(cfg=yolo_config(ctx, yolo_dataset(ctx, ["a", "b", "c"], classes=(0, 7))))


@case("yolo_nc_disagrees", "labels", "nc is 5 but names lists 3 classes", "make nc equal the number of names")
def _(ctx):
    data_yaml = yolo_dataset(ctx, ["a", "b", "c"])
    spec = yaml.safe_load(data_yaml.read_text())
    data_yaml.write_text(yaml.safe_dump({**spec, "nc": 5}))
    return ctx.train(cfg=yolo_config(ctx, data_yaml))


@case("eval_on_training_images", "labels", "validation images are also training images",
      "nothing to fix if intended: the AP then measures memorisation", stops=False, warns=True)
def _(ctx):
    cfg = tiny_config(ctx.demo, epochs=1)
    cfg["val_dataloader"]["dataset"].update(img_folder=str(ctx.demo / "train"), ann_file=str(ctx.demo / "train" / ANN))
    return ctx.train(cfg=ctx.config(cfg))


@case("batch_larger_than_dataset", "labels", "fewer than one batch of 8 (drop_last drops the rest): no step would run",
      "lower total_batch_size to at most 4")
def _(ctx):
    return ctx.train("-u", "train_dataloader.total_batch_size=8")


# ------------------------------------------------------------------------------------ COCO files of the wrong shape
def broken_annotations(id, see, hint, content):
    @case(id, "labels", see, hint)
    def _(ctx):
        root = copy_demo(ctx.demo, ctx.tmp)
        path = root / "train" / ANN
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        return (*ctx.train(cfg=ctx.config(tiny_config(root, epochs=1))), path)


broken_annotations("coco_is_a_list", "a COCO annotation file is a mapping with images/annotations/categories, got a list",
                   "pass the annotation file", [{"image_id": 1}])
broken_annotations("coco_images_not_a_list", "`images` must be a list, got dict", "re-export the annotations",
                   {"images": {"1": "a.jpg"}, "annotations": [], "categories": []})
broken_annotations("coco_entry_not_a_mapping", "`categories[0]` must be a mapping, got str", "re-export the annotations",
                   {"images": [], "annotations": [], "categories": ["circle"]})
broken_annotations("coco_not_utf8", "not UTF-8 text", "a COCO file is UTF-8 JSON", b"\xff\xfe{\x00")
broken_annotations("coco_nested_too_deeply", "JSON nested too deeply to read", "is this the annotation file?",
                   b"[" * 100_000 + b"]" * 100_000)


@case("coco_is_a_folder", "labels", "is a folder, not an annotation file", "point `ann_file` at the .json inside it")
def _(ctx):
    cfg = tiny_config(ctx.demo, epochs=1)
    cfg["train_dataloader"]["dataset"]["ann_file"] = str(ctx.demo / "train")
    return ctx.train(cfg=ctx.config(cfg))


# ------------------------------------------------------------------------------------------------ files: no data lost
def yolo_tree(ctx) -> Path:
    data_yaml = yolo_dataset(ctx, ["a", "b", "c"])
    return data_yaml.parent


def images_of(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def convert_into(id, see, where):
    @case(id, "files", see, "choose a folder outside the YOLO dataset")
    def _(ctx):
        src = yolo_tree(ctx)
        before = images_of(src)
        dst = {"inside": src / "coco", "equal": src / "train" / "images", "around": src.parent}[where]
        code, text = run_cli(yolo2coco.main, ["--src", src, "--dst", dst])
        assert images_of(src) == before                                  # every source image intact
        return code, text


convert_into("yolo2coco_dst_inside_src", "overlaps the source", "inside")
convert_into("yolo2coco_dst_is_the_images", "the source", "equal")
convert_into("yolo2coco_dst_contains_src", "overlaps the source", "around")


@case("predict_into_its_input", "files", "writes inside the input", "choose an output folder outside the input folder")
def _(ctx):
    folder = ctx.tmp / "images"
    shutil.copytree(ctx.demo / "val", folder)
    before = images_of(folder)
    code, text = run_cli(predict.main, ["-c", ctx.config(), "-r", "x.pth", "-i", folder, "-o", folder])
    assert images_of(folder) == before
    return code, text


@case("checkpoint_rewritten_onto_itself", "files", "the target is the source itself",
      "write the new file under another name")
def _(ctx):
    from engine import checkpoint

    path = saved_weights(ctx, {"model": {"w": torch.ones(2)}, "ema": {"module": {"w": torch.zeros(2)}},
                               "optimizer": {"state": {}}}, "run.pth")
    before = path.read_bytes()
    code, text = run_cli(checkpoint.main, [path, ctx.tmp / "." / "run.pth", "--ema-only"])
    assert path.read_bytes() == before   # the training state is still there
    return code, text, path


@case("predict_skips_a_broken_image", "files", "skipped", "nothing: the other images are predicted and listed",
      names=("1 of 3 inputs skipped: broken.jpg",), stops=False, warns=True)
def _(ctx):
    ctx.train()
    folder = ctx.tmp / "images"
    shutil.copytree(ctx.demo / "val", folder, ignore=shutil.ignore_patterns("*.json"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, text = run_cli(predict.main, ["-c", ctx.config(), "-r", ctx.tmp / "out" / "last.pth", "-i", folder,
                                        "-o", ctx.tmp / "pred", "-d", "cpu"])
    written = json.loads((ctx.tmp / "pred" / "detections.json").read_text())
    assert set(written) == {"100001.jpg", "100002.jpg", "skipped"} and "broken.jpg" in written["skipped"]
    return code, text


@case("output_dir_in_use", "files", "output", "nothing: a second run writes into OUT2", stops=False)
def _(ctx):
    from engine.run_dir import RunLock

    (ctx.tmp / "out").mkdir()
    lock = RunLock(ctx.tmp / "out")
    assert lock.acquire()                       # a live run (this process) holds the folder
    try:
        code, text = ctx.train()
    finally:
        lock.release()
    assert f"output {ctx.tmp / 'out'}2" in text and not (ctx.tmp / "out" / "log.txt").exists()
    return code, text


@case("auto_resume_before_first_checkpoint", "files", "--auto-resume: nothing to resume in",
      "nothing: the run starts in its own folder", stops=False)
def _(ctx):
    (ctx.tmp / "out").mkdir()
    (ctx.tmp / "out" / "log.txt").write_text("")   # a run killed before its first checkpoint
    code, text = ctx.train("--auto-resume")
    assert (ctx.tmp / "out" / "last.pth").is_file() and not (ctx.tmp / "out2").exists()
    return code, text


@case("resume_a_finished_run", "files", "this run already finished all 1 epochs", "train longer with -u epochs=N")
def _(ctx):
    ctx.train()
    return ctx.train("-r", ctx.tmp / "out" / "last.pth")


@case("disk_full_while_saving", "files", "no space left on the device", "free disk space",
      names=("the previous file under this name, if any, is intact",))
def _(ctx):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    ctx.monkeypatch.setattr("core.checkpoint_io.torch.save", full)
    return ctx.train()


@case("resume_with_other_optimizer_groups", "files", "its optimizer state does not fit this config's optimizer",
      "start a new run from it with -t")
def _(ctx):
    ctx.train()
    groups = "optimizer.params=[{params: 'norm', weight_decay: 0.}, {params: '^(?!.*norm).*bias', lr: 0.001}]"
    return ctx.train("-r", ctx.tmp / "out" / "last.pth", "-u", "epochs=2", groups)


@case("ctrl_c_during_training", "files", "interrupted after epoch 0; the last whole checkpoint is",
      "continue with `-r")
def _(ctx):
    from engine.solver import Solver

    step = Solver.train_step

    def interrupt_in_epoch_1(self, images, targets, epoch, index):
        if epoch == 1:
            raise KeyboardInterrupt
        return step(self, images, targets, epoch, index)

    ctx.monkeypatch.setattr(Solver, "train_step", interrupt_in_epoch_1)
    code, text = ctx.train("-u", "epochs=2")
    assert code == 130 and torch.load(ctx.tmp / "out" / "last.pth", weights_only=True)["epoch"] == 0
    return 2, text  # the corpus check wants the stop code; 130 (SIGINT's) was checked above


@case("output_inside_the_images", "files", "is inside the train images' folder",
      "write runs outside the dataset")
def _(ctx):
    """A YOLO split takes every image below its folder: the run's pictures would join it next time."""
    root = copy_demo(ctx.demo, ctx.tmp)
    code, text = ctx.train("--output-dir", root / "train" / "run", cfg=ctx.config(tiny_config(root, epochs=1)))
    assert not list((root / "train").rglob("*.pth"))
    return code, text


@case("ctrl_c_during_evaluation", "files", "interrupted after epoch 0; the last whole checkpoint is",
      "continue with `-r")
def _(ctx):
    """Epoch 1 has trained but its checkpoint is not written yet: the message must name epoch 0."""
    from engine.solver import Solver

    evaluate = Solver.evaluate

    def interrupt_second_evaluation(self, *args, **kwargs):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return evaluate(self, *args, **kwargs)

    ctx.monkeypatch.setattr(Solver, "evaluate", interrupt_second_evaluation)
    code, text = ctx.train("-u", "epochs=2")
    assert code == 130 and torch.load(ctx.tmp / "out" / "last.pth", weights_only=True)["epoch"] == 0
    return 2, text


# --------------------------------------------------------------------------------------------- resources, checkpoints
@case("yaml_alias_bomb", "resources", "expand to more than 1,000,000 values", "write the values out")
def _(ctx):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(['*a%d' % (i - 1)] * 10)}]" for i in range(1, 12)]
    path = ctx.tmp / "bomb.yml"
    path.write_text("\n".join(lines) + "\n")
    return (*ctx.train(cfg=path), path)


@case("yaml_nested_too_deeply", "resources", "nesting deeper than 100 levels", "write the values out")
def _(ctx):
    path = ctx.tmp / "deep.yml"
    path.write_text("a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    return (*ctx.train(cfg=path), path)


@case("yaml_file_too_big", "resources", "too big for a YAML config", "is this the right file?")
def _(ctx):
    path = ctx.tmp / "huge.yml"
    path.write_text("# " + "x" * (17 * 2 ** 20) + "\nepochs: 1\n")
    return (*ctx.train(cfg=path), path)


@case("image_above_pixel_limit", "resources", "image above PIL's pixel limit", "raise PIL.Image.MAX_IMAGE_PIXELS")
def _(ctx):
    # PIL's limit lowered to the demo's 96 x 96 images, so a 200 x 200 one is over twice it (PIL's bomb error)
    # without writing a gigapixel file
    ctx.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 96 * 96)
    root = copy_demo(ctx.demo, ctx.tmp)
    Image.new("L", (200, 200)).save(root / "train" / "000001.png")
    edit_annotations(root, lambda coco: coco["images"][0].update(file_name="000001.png", width=200, height=200))
    return ctx.train(cfg=ctx.config(tiny_config(root, epochs=1)))


def saved_weights(ctx, state: dict, name: str) -> Path:
    path = ctx.tmp / name
    torch.save(state, path)
    return path


@case("integer_weights", "resources", "integer tensors where the model has floats", "-r resumes the same graph")
def _(ctx):
    ctx.train()
    state = torch.load(ctx.tmp / "out" / "last.pth", weights_only=True)
    state["model"] = {k: v.to(torch.int64) for k, v in state["model"].items()}
    path = saved_weights(ctx, state, "ints.pth")
    return (*ctx.train("-r", path, "-u", "epochs=2"), path)


@case("checkpoint_is_yaml", "resources", "is a YAML text file, not a checkpoint", "configs go to -c")
def _(ctx):
    cfg = ctx.config()
    return (*ctx.train("-t", cfg), cfg)


@case("checkpoint_not_a_dict", "resources", "holds a list, not a checkpoint dict", "save a dict")
def _(ctx):
    path = saved_weights(ctx, [torch.ones(2)], "list.pth")
    return (*ctx.train("-t", path), path)


@case("checkpoint_without_weights", "resources", "checkpoint has no weights", "pass a checkpoint written by train.py")
def _(ctx):
    return ctx.train("-t", saved_weights(ctx, {"epoch": 3, "note": "no tensors"}, "empty.pth"))


@case("weights_only_resume", "resources", "weights only, no training state (optimizer, epoch) to resume",
      "use -t to start a new run from these weights")
def _(ctx):
    ctx.train()
    state = torch.load(ctx.tmp / "out" / "last.pth", weights_only=True)
    return ctx.train("-r", saved_weights(ctx, {"model": state["model"]}, "weights.pth"), "-u", "epochs=2")


@case("safetensors_torn", "resources", "not a valid safetensors file", "the file is torn or truncated")
def _(ctx):
    from safetensors.torch import save_file

    path = ctx.tmp / "model.safetensors"
    save_file({"w": torch.ones(64)}, str(path))
    path.write_bytes(path.read_bytes()[:40])
    return (*ctx.train("-t", path), path)


@case("safetensors_garbage", "resources", "not a valid safetensors file", "download or export it again")
def _(ctx):
    path = ctx.tmp / "model.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return (*ctx.train("-t", path), path)


# ------------------------------------------------------------------------------------------------------ the runs
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("hardening_demo"), train=4, val=2)


@pytest.mark.parametrize("case_id", list(RUNNERS))
def test_hardening_case(case_id, demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = RUNNERS[case_id](Context(demo, tmp_path, monkeypatch))
    code, text, path = (*result, None) if len(result) == 2 else result
    check_message(next(c for c in CASES if c.id == case_id), code, text, path)


def test_refused_pickle_message_never_relays_the_advice_to_allow_listing(demo, tmp_path):
    from tests.test_corpus import RunsCode

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": RunsCode(str(tmp_path / "pwned"))}, path)
    code, text = Context(demo, tmp_path, None).train("-t", path)
    assert code == 2 and "refused to unpickle" in text
    for advice in ("add_safe_globals", "safe_globals", "weights_only=False", "allowlist"):
        assert advice not in text, text


def test_readme_troubleshooting_section_is_rendered_from_both_corpora():
    from tests.corpus.make_troubleshooting import GROUPS, all_cases, readme_section, render

    cases = all_cases()
    assert len({c.id for c in cases}) == len(cases) == 148
    assert {g: sum(c.group == g for c in cases) for g in GROUPS} == {
        "graph": 20, "dataset": 15, "checkpoint": 5, "config": 48, "command": 15, "labels": 20, "files": 14,
        "resources": 11}
    assert readme_section((REPO / "README.md").read_text()) == render(cases), (
        "README.md is out of date: run python tests/corpus/make_troubleshooting.py")
