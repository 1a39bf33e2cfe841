"""The training loop shared by every graph: stages, evaluation, checkpoints, guards.

One run = epochs of (train one epoch -> evaluate the EMA weights -> save). Stage 1 ends at
`train_dataloader.collate_fn.stop_epoch` (the official name): there the strong augmentation stops
and the model, EMA (with its update count) and optimizer restart from `best_stg1.pth`. In stage 2
an epoch that does not improve AP restarts from `best_stg1.pth` again (DEIM/D-FINE's rule). The EMA
decay stays as configured, as in the official trainers: they assign `ema_restart_decay` and lower
the decay by 1e-4 per restart, but their ModelEMA's decay function keeps the first value, so
neither changes the average. `restart_stage2: false` (RT-DETRv2's trainer) keeps stop_epoch to
the augmentation and multi-scale only.

The Solver takes a composed run config and resolves it once (`engine.config.resolve`: validated,
derived values filled; the caller's dict is not changed). Distillation, when the config has a
`distill:` section, is a component the Solver holds (`engine.distill.Distiller`): it adds its loss
terms, its trainable adapters and its checkpoint state; the loop is the same.

Reproducibility: every epoch reseeds torch/numpy/random (and the loader's generators) from
(seed, epoch, rank), and learning rates are a pure function of (step, epoch), so `-r last.pth`
continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from core import dist
from core.checkpoint_io import DiskFullError, atomic_write_text, model_weights, read_checkpoint, save_atomic
from core.errors import CheckpointError, ConfigError, DataError, DetrZooError, Interrupted
from data.collate import padding_mask
from engine import checkpoint
from engine.config import resolve
from engine.ema import ModelEMA
from engine.host_memory import keep_freed_host_memory
from engine.logger import RunLogger, plot_batch
from engine.optim import LRSchedule, build_optimizer
from engine.run_dir import claim_output_dir
from metrics.coco_eval import STAT_NAMES, CocoEvaluator
from metrics.detection import format_per_class
from models.factory import build_detector, describe_mismatch, load_weights, unused_graph

# run options that are also config keys: a command-line flag wins over the config's value
FLAG_KEYS = ("seed", "device", "output_dir", "summary_dir")


class TrainingDiverged(DetrZooError):
    """Too many consecutive steps with a non-finite loss, boxes or gradients."""


class RunInterrupted(Interrupted):
    """Ctrl-C during training: the message says where the last whole checkpoint is."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def amp_dtype(device: torch.device, wanted: str | None) -> torch.dtype:
    if wanted is not None:
        return getattr(torch, wanted)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _to_float(value):
    if isinstance(value, torch.Tensor):
        # fp16/bf16 (autocast) up to fp32; fp32 and fp64 as they are
        return value.to(torch.promote_types(value.dtype, torch.float32)) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


def _to_device(targets: list[dict], device) -> list[dict]:
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]


@torch.no_grad()
def _restore(tensors, saved) -> None:
    for tensor, value in zip(tensors, saved):
        tensor.copy_(value)


def _finite(value) -> bool:
    return bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(value)


def apply_flags(cfg: dict, options: dict) -> dict:
    """A copy of `cfg` with the command line's run flags set (they win over the config)."""
    out = {**cfg, **{k: options[k] for k in FLAG_KEYS if options.get(k) is not None}}
    if options.get("use_amp"):
        out["use_amp"] = True
    return out


class Solver:
    """Builds everything a run needs from a run config and runs `fit()` or `test()`.

    options: device, seed, use_amp, resume, tuning, output_dir, summary_dir, auto_resume, test_only,
    config (the config's path: graph paths resolve beside it), update (recorded), and for
    distillation teacher_config, teacher_weights, teacher_updates."""

    def __init__(self, cfg: dict, **options):
        self.options = options
        self.test_only = bool(options.get("test_only"))
        self.cfg = resolve(apply_flags(cfg, options), world_size=dist.launched_world_size(),
                           config_path=options.get("config"), training=not self.test_only)
        self.device = dist.init(self.cfg["device"])
        if self.cfg["host_memory_reuse"]:
            keep_freed_host_memory()
        self.seed = self.cfg["seed"]
        seed_everything(self.seed + dist.rank())
        self.epochs = self.cfg["epochs"]
        self.lock = None
        self.output_dir = self._claim_output_dir()
        try:
            self.resume_state = self._read_resume_state()
            self._build_data()
            self._build_model()
            self.distiller = self._build_distiller()
            self._build_training()
            self.logger = RunLogger(self.output_dir, self._summary_dir(), progress_bar=self.cfg["progress_bar"])
            self._save_run_files()
        except BaseException:
            if self.lock is not None:
                self.lock.abandon()
            raise

    # ----------------------------------------------------------------- setup
    def _claim_output_dir(self) -> Path:
        resume = self.options.get("resume")
        wanted = Path(self.cfg["output_dir"])
        if self.test_only:  # evaluation output goes beside the checkpoint (run/eval/), never over the run's files
            wanted, reuse = (Path(self.options["output_dir"]) if self.options.get("output_dir")
                             else Path(resume).parent / "eval"), False
        elif self.options.get("auto_resume") and not resume:
            reuse = True  # this run's own folder, whatever it holds
            if (wanted / "last.pth").is_file():
                self.options["resume"] = str(wanted / "last.pth")
            elif dist.is_main():
                print(f"--auto-resume: nothing to resume in {wanted} (no last.pth); starting there from epoch 0")
        else:
            reuse = bool(resume) and Path(resume).resolve().parent == wanted.resolve()
        chosen = wanted
        if dist.is_main():
            chosen, self.lock = claim_output_dir(wanted, reuse)
        return Path(dist.broadcast_object(str(chosen)))

    def _read_resume_state(self) -> dict | None:
        path = self.options.get("resume")
        return read_checkpoint(path) if path else None

    def _summary_dir(self) -> Path:
        return Path(self.cfg["summary_dir"] or self.output_dir / "summary")

    def _build_data(self) -> None:
        import data
        from data.coco import merge_categories

        cfg = self.cfg
        distributed = dist.enabled()
        splits = ("val",) if self.test_only else ("train", "val")
        datasets = {split: data.build_dataset(cfg[f"{split}_dataloader"], split) for split in splits}
        self.category_ids, self.names = self._category_mapping(datasets, merge_categories)
        for split, dataset in datasets.items():
            dataset.use_categories(self.category_ids, self.names, source=self._mapping_source)
        self.nc = len(self.category_ids)
        if dist.is_main():
            shown = ", ".join(f"{i}={n!r}" for i, n in zip(self.category_ids[:12], self.names[:12]))
            print(f"{self.nc} classes ({self._mapping_source}): labels 0..{self.nc - 1} are category ids "
                  f"{shown}{', ...' if self.nc > 12 else ''}")
        if cfg["nc"] is not None and cfg["nc"] != self.nc and dist.is_main():
            print(f"note: config nc={cfg['nc']} but the dataset has {self.nc} classes; using {self.nc}")
        if not self.test_only:
            self.train_loader = data.build_dataloader(cfg["train_dataloader"], "train", distributed=distributed,
                                                      seed=self.seed, dataset=datasets["train"])
            if len(self.train_loader) == 0:
                raise ConfigError(f"the training set has {len(datasets['train'])} images, fewer than one batch of "
                                  f"{self.train_loader.batch_size} (drop_last drops the rest): no step would run",
                                  where="train_dataloader.total_batch_size",
                                  hint=f"lower total_batch_size to at most {len(datasets['train'])}")
            self._warn_shared_images(datasets["train"], datasets["val"])
            self._check_output_outside_images(datasets)
        scored = sum(not a.get("iscrowd", 0) for a in datasets["val"].coco.dataset["annotations"])
        if scored == 0:
            total = len(datasets["val"].coco.dataset["annotations"])
            raise DataError(f"the validation set has no objects to score ({total} annotations"
                            f"{', all iscrowd' if total else ''}): COCO AP would be -1 every epoch and best.pth "
                            "an arbitrary one", where=str(datasets["val"].ann_file),
                            hint="validate on images with annotated objects (iscrowd: 0)")
        self.val_loader = data.build_dataloader(cfg["val_dataloader"], "val", distributed=distributed, seed=self.seed,
                                                dataset=datasets["val"])
        self.evaluator = CocoEvaluator(datasets["val"].coco, self.category_ids, self.names)

    def _category_mapping(self, datasets: dict, merge) -> tuple[list, list[str]]:
        """One label <-> category mapping for the run: a resumed or evaluated checkpoint's, the
        config's `classes:` list, or the union of the splits' categories."""
        meta = (self.resume_state or {}).get("meta") or {}
        if meta.get("category_ids") is not None:
            self._mapping_source = f"the checkpoint {self.options.get('resume')}"
            return list(meta["category_ids"]), list(meta["names"])
        ids, names = merge(list(datasets.values()), where=", ".join(str(d.ann_file) for d in datasets.values()))
        classes = self.cfg["classes"]
        if classes is not None:
            self._mapping_source = "the config's `classes:`"
            by_name = dict(zip(names, ids))
            unknown = [n for n in names if n not in classes]
            if unknown:
                raise ConfigError(f"`classes:` lacks categories the data has: {unknown}", where="classes",
                                  hint=f"list every category: {names}")
            # classes the data lacks keep their label with a placeholder id (no annotation refers to it)
            return [by_name.get(n, f"absent:{n}") for n in classes], list(classes)
        self._mapping_source = "the union of the splits' categories"
        return ids, names

    def _check_output_outside_images(self, datasets: dict) -> None:
        """A run writes pictures (its augmented batch, plots) into its folder; inside an image folder a
        YOLO split, which takes every image below its folder, would train on them next time."""
        output = self.output_dir.resolve()
        for split, dataset in datasets.items():
            folders = {Path(dataset.img_folder, im["file_name"]).parent for im in dataset.coco.dataset["images"]}
            for folder in {f.resolve() for f in folders}:
                if output == folder or folder in output.parents:
                    raise ConfigError(f"the output folder {self.output_dir} is inside the {split} images' folder "
                                      f"{folder}: the run's pictures would become images of that split",
                                      where="--output-dir", hint="write runs outside the dataset, e.g. outputs/NAME")

    def _warn_shared_images(self, train, val) -> None:
        def files(dataset):
            return {(Path(dataset.img_folder) / im["file_name"]).resolve() for im in dataset.coco.dataset["images"]}

        shared = files(train) & files(val)
        if shared and dist.is_main():
            print(f"warning: {len(shared)} of the {len(val)} validation images are also training images (e.g. "
                  f"{sorted(shared)[0]}); the validation AP measures memorisation, not generalisation")

    def _build_model(self) -> None:
        graph_cfg = self.cfg
        meta = (self.resume_state or {}).get("meta") or {}
        if self.test_only and meta.get("graph_spec"):  # evaluate what was trained
            other = unused_graph(meta, self.cfg)
            if other and dist.is_main():
                print(f"note: evaluating the graph {self.options['resume']} records, which its weights were trained "
                      f"with; the config's {other} differs and is not used")
            graph_cfg = {**self.cfg, "graph": meta["graph_spec"], "scale": meta.get("scale"),
                         "imgsz": meta.get("imgsz") or self.cfg["imgsz"]}
        model, criterion, postprocessor = build_detector(graph_cfg, nc=self.nc, with_criterion=not self.test_only)
        self.imgsz = tuple(model.imgsz)
        self.finetune_report = None
        if self.options.get("tuning"):
            self.finetune_report = checkpoint.load_for_finetune(model, self.options["tuning"])
            if dist.is_main():
                print(checkpoint.format_finetune_report(self.finetune_report))
        self.raw_model = model.to(self.device)
        if self.cfg["channels_last"]:
            self.raw_model.to(memory_format=torch.channels_last)  # 4-d weights; inputs follow in train_one_epoch
        self.criterion = criterion.to(self.device) if criterion is not None else None
        if self.cfg["compile"] and not self.test_only:
            self._compile()
        self.postprocessor = postprocessor.to(self.device)

    def _compile(self) -> None:
        """torch.compile, in place (state-dict names unchanged): every graph row that does not take the
        targets (backbone, encoder; the decoder builds Python lists of queries per step), the
        deformable attention's weighted sum inside the decoders, and the criterion's dense terms.
        Compilation happens in the first steps; `compile_seconds` records them."""
        for row, layer in zip(self.raw_model.rows, self.raw_model.layers):
            if not row.takes_targets:
                layer.compile(dynamic=False)
        for module in self.raw_model.modules():  # the decoders' deformable attention
            if hasattr(module, "compile_weighted_sum"):
                module.compile_weighted_sum()
        if self.criterion is not None:
            self.criterion.compile_dense_terms()
        self.compile_seconds = None  # set after the first step, which pays for compiling

    def _build_distiller(self):
        if self.test_only:
            return None
        from core.schema import validate_section
        from engine.config import RunConfig, load_config, locate_graph
        from engine.distill import Distiller, freeze_unsupervised_projector

        distiller = None
        if self.cfg["distill"] is not None:
            teacher_cfg, path = None, self.options.get("teacher_config")
            if path:
                teacher_cfg = load_config(path, self.options.get("teacher_updates") or ())
                validate_section(RunConfig, teacher_cfg, f"teacher config {path}")
                teacher_cfg["graph"] = locate_graph(teacher_cfg.get("graph"), path)
            distiller = Distiller(self.cfg["distill"], self.raw_model, self.imgsz, self.device, self.epochs,
                                  teacher_cfg=teacher_cfg, teacher_weights=self.options.get("teacher_weights"),
                                  criterion=self.criterion, student_names=self.names)
        freeze_unsupervised_projector(self.raw_model, distiller)
        return distiller

    def _build_training(self) -> None:
        cfg = self.cfg
        self.use_amp = cfg["use_amp"]
        self.amp_dtype = amp_dtype(self.device, cfg["amp_dtype"])
        if self.use_amp and self.device.type == "cpu" and cfg["amp_dtype"] is None:
            if dist.is_main():
                # a DEIM-N step: 4x slower on an AVX2 AMD EPYC, 1.1x slower on a Xeon with AMX-BF16
                print("note: --use-amp on the CPU: bf16 autocast ran no faster than fp32 on the CPUs measured (1.1-4x "
                      "slower), so this run trains in fp32; force bf16 with -u amp_dtype=bfloat16")
            self.use_amp = False
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.ema = None
        if cfg["use_ema"] and not self.test_only:  # --test-only evaluates the checkpoint's (EMA) weights as loaded
            ema = cfg["ema"]
            self.ema = ModelEMA(self.raw_model, decay=ema["decay"], warmups=ema["warmups"], start=ema["start"])
        if self.distiller is not None:
            self.distiller.attach(self.raw_model)  # after the EMA copy, so the EMA model carries no hooks
        self.model = dist.wrap_model(self.raw_model, self.device, cfg["sync_bn"], cfg["find_unused_parameters"])
        self.epoch = -1           # last finished epoch
        self.last_saved = None    # (path, epoch) of the newest whole checkpoint a run can continue from
        self.global_step = 0
        self.best = {"ap": -1.0, "epoch": -1}
        self.stage2 = {"reference": None, "pending_restart": False}
        self.bad_in_row = 0
        self.bad_total = 0
        collate = (cfg["train_dataloader"] or {}).get("collate_fn") or {}
        self.stop_epoch = collate.get("stop_epoch") if cfg["restart_stage2"] else None
        self.padded_splits = self._padded_splits(cfg)
        if not self.test_only:
            self.optimizer = build_optimizer(self.raw_model, cfg["optimizer"])
            for group in self.extra_param_groups():  # distillation adapters: trained, kept out of the model
                self.optimizer.add_param_group(dict(group))
                self.optimizer.param_groups[-1].setdefault("initial_lr", self.optimizer.param_groups[-1]["lr"])
            self.schedule = LRSchedule(self.optimizer, cfg["lr_scheduler"], cfg["lr_warmup_scheduler"],
                                       len(self.train_loader), self.epochs, cfg["flat_epoch"], cfg["no_aug_epoch"] or 0)
            self.schedule.set(0, 0)  # the first step's lr; a resumed optimizer state brings its own
        if self.resume_state is not None:
            self.load_resume(self.resume_state, self.options["resume"])

    def extra_param_groups(self) -> list[dict]:
        return self.distiller.param_groups() if self.distiller is not None else []

    def _save_run_files(self) -> None:
        if not dist.is_main() or self.test_only:
            return
        import yaml

        text = yaml.safe_dump({**self.cfg, "output_dir": str(self.output_dir)}, sort_keys=False, allow_unicode=True)
        atomic_write_text(self.output_dir / "config.yml", text)
        atomic_write_text(self.output_dir / "args.json", json.dumps(self.options, indent=1, default=str))

    def close(self) -> None:
        """Release the output folder (and the logger); safe to call twice."""
        self.logger.close()
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------------ checkpoints
    def meta(self) -> dict:
        return {"names": self.names, "category_ids": self.category_ids, "nc": self.nc, "imgsz": list(self.imgsz),
                "scale": self.raw_model.scale, "graph": str(self.raw_model.graph_path),
                "graph_spec": self.raw_model.graph_spec, "config": {**self.cfg, "output_dir": str(self.output_dir)}}

    def state_dict(self, stats: dict | None = None) -> dict:
        state = {"model": self.raw_model.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": checkpoint.rng_state(), "meta": self.meta(), "stats": stats or {},
                 "solver": {"best": dict(self.best), "stage2": dict(self.stage2), "bad_total": self.bad_total}}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.distiller is not None:
            state["distill"] = self.distiller.state_dict()
        return state

    def save(self, *names: str, stats: dict | None = None) -> None:
        """One training state under each of `names`, written in that order (serialized once)."""
        if dist.is_main():
            paths = [self.output_dir / name for name in names]
            save_atomic(self.state_dict(stats), paths[0], copies=paths[1:])
        if "last.pth" in names:
            self.last_saved = (self.output_dir / "last.pth", self.epoch)

    def _load_weights(self, state: dict, path, restart: bool = False) -> None:
        mismatch = describe_mismatch(self.raw_model, state["model"])
        if mismatch:
            raise CheckpointError(f"{path} does not fit this model: {mismatch}", where=str(path),
                                  hint="-r resumes the same graph and class count; use -t to fine-tune from other weights")
        self.raw_model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if "ema" in state else {"module": state["model"]})
        if self.distiller is not None:
            self.distiller.load_state_dict(state.get("distill"), path, resuming="optimizer" in state, restart=restart)

    def load_resume(self, state: dict, path) -> None:
        if self.test_only:  # the weights training evaluated (EMA first); official releases convert
            weights, _ = model_weights(state)
            conversion = load_weights(self.raw_model, weights, path)
            if conversion and dist.is_main():
                print(f"converted from the official layout: {conversion}")
            return
        if "model" not in state:
            raise CheckpointError("no `model` weights to resume", where=str(path),
                                  hint="use -t to start a new run from these weights (official releases too)")
        self._load_weights(state, path)
        if "optimizer" not in state:
            raise CheckpointError("weights only, no training state (optimizer, epoch) to resume", where=str(path),
                                  hint="use -t to start a new run from these weights")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:   # torch's words for another group layout
            raise CheckpointError(f"its optimizer state does not fit this config's optimizer: {err}",
                                  where=str(path), hint="-r continues with the optimizer settings the run started "
                                  "with (optimizer.params, distillation adapters); to change them start a new run "
                                  "from it with -t") from None
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state.get("epoch", -1))
        self.last_saved = (Path(path), self.epoch)
        self.global_step = int(state.get("global_step", (self.epoch + 1) * len(self.train_loader)))
        solver = state.get("solver", {})
        self.best = dict(solver.get("best", self.best))
        self.stage2 = dict(solver.get("stage2", self.stage2))
        self.bad_total = int(solver.get("bad_total", 0))
        if "rng" in state:
            checkpoint.set_rng_state(state["rng"])
        if dist.is_main():
            print(f"resumed from {path}: epoch {self.epoch} finished, continuing at epoch {self.epoch + 1}")

    def restart_from_stage1(self) -> None:
        """Stage 2: reload the best stage-1 model, EMA, optimizer and scaler (the EMA decay is kept)."""
        dist.barrier()
        path = self.output_dir / "best_stg1.pth"
        if not path.is_file():
            return
        state = read_checkpoint(path)
        self._load_weights(state, path, restart=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if dist.is_main():
            print(f"stage 2: restarted from {path} (epoch {state['epoch']})")

    # ------------------------------------------------------------------ loop
    def seed_epoch(self, epoch: int) -> None:
        seed = self.seed + 1000 * epoch + dist.rank()
        seed_everything(seed)
        for generator in (getattr(self.train_loader, "generator", None),
                          getattr(getattr(self.train_loader, "sampler", None), "generator", None)):
            if isinstance(generator, torch.Generator):
                generator.manual_seed(seed)

    def fit(self, max_epochs: int | None = None) -> dict:
        """Train from the epoch after the last finished one to `epochs` (or `max_epochs` of them now).

        Ctrl-C stops after saving nothing new: the last whole checkpoint stays and the message says
        how to continue; a full or read-only disk stops with the path and the last good checkpoint."""
        try:
            return self._fit(max_epochs)
        except KeyboardInterrupt:
            message, hint = self._where_it_stopped("interrupted")
            raise RunInterrupted(message, hint=hint) from None
        except DiskFullError as err:
            message, hint = self._where_it_stopped("stopped")
            raise DiskFullError(f"{err.message}; {message}", where=err.where, hint=f"{err.hint}; then {hint}") from None
        finally:
            self.close()

    def _where_it_stopped(self, what: str) -> tuple[str, str]:
        """(what happened and the last whole checkpoint, how to continue) for a run stopped early. The
        epoch is the saved one: a stop during an epoch's evaluation or save leaves the one before."""
        teacher = ""
        if self.options.get("teacher_weights"):  # distill.py needs its teacher again to continue
            teacher = f" -tc {self.options.get('teacher_config')} -tw {self.options['teacher_weights']}"
        if self.last_saved is not None:
            path, epoch = self.last_saved
            return (f"{what} after epoch {epoch}; the last whole checkpoint is {path}",
                    f"continue with `-r {path}{teacher}` (or --auto-resume --output-dir {self.output_dir}{teacher})")
        return (f"{what} before the first checkpoint",
                f"rerun with --auto-resume --output-dir {self.output_dir}{teacher}")

    def _fit(self, max_epochs: int | None) -> dict:
        import data

        start = self.epoch + 1
        if start >= self.epochs:
            message = (f"this run already finished all {self.epochs} epochs (last epoch {self.epoch}); nothing to train")
            if self.options.get("auto_resume"):
                print(f"--auto-resume: {message}")
                return {}
            raise ConfigError(message, where=str(self.options.get("resume")),
                              hint="evaluate it with --test-only, train longer with -u epochs=N (N above "
                                   f"{self.epochs}), or fine-tune from it with -t")
        end = self.epochs if max_epochs is None else min(self.epochs, start + max_epochs)
        if dist.is_main():
            params = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
            print(f"training {params:,} parameters for epochs {start}..{self.epochs - 1} on {self.device}, "
                  f"total batch {self.train_loader.batch_size * dist.world_size()}, output {self.output_dir}")
        stats = {}
        for epoch in range(start, end):
            self.seed_epoch(epoch)
            data.set_epoch(self.train_loader, epoch)
            if self.stop_epoch is not None and epoch == self.stop_epoch and epoch > 0:
                self.restart_from_stage1()
                self.stage2 = {"reference": None, "pending_restart": False}
            elif self.stage2.get("pending_restart"):
                self.restart_from_stage1()
                self.stage2 = {"reference": None, "pending_restart": False}
            started = time.time()
            train_stats = self.train_one_epoch(epoch)
            self.epoch = epoch
            stats = self.evaluate()
            self.after_epoch(epoch, train_stats, stats, time.time() - started)
        if dist.is_main() and end == self.epochs and self.evaluator.results:
            # the final model's val predictions (dataset category ids), for TIDE and other analysis
            atomic_write_text(self.output_dir / "predictions_last.json", json.dumps(self.evaluator.detections))
        return stats

    def in_stage2(self, epoch: int) -> bool:
        return self.stop_epoch is not None and epoch >= self.stop_epoch

    def after_epoch(self, epoch: int, train_stats: dict, stats: dict, seconds: float) -> None:
        ap = stats["stats"][0]
        improved = ap > self.best["ap"] or self.best["epoch"] < 0  # the first evaluation is the best so far
        if improved:
            self.best = {"ap": ap, "epoch": epoch}
        if self.in_stage2(epoch):
            reference = self.stage2.get("reference")
            if reference is None or ap > reference:
                self.stage2["reference"] = ap
            elif self.ema is not None:
                self.stage2["pending_restart"] = True  # done at the start of the next epoch (resumable)
        record = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()},
                  **{f"test_{name}": value for name, value in zip(STAT_NAMES, stats["stats"])},
                  **{f"test_yolo_{k}": v for k, v in stats.get("yolo", {}).items()},
                  "best_ap": self.best["ap"], "best_epoch": self.best["epoch"], "seconds": round(seconds, 2),
                  "bad_steps": self.bad_total, "dropped_predictions": stats.get("dropped", 0)}
        names = []
        if improved:  # best.pth: the best of the run; the stage file too (stage 2 restarts from best_stg1)
            names += ["best.pth", "best_stg2.pth" if self.in_stage2(epoch) else "best_stg1.pth"]
        freq = self.cfg["checkpoint_freq"]
        if freq and (epoch + 1) % freq == 0:
            names.append(f"checkpoint{epoch:04d}.pth")
        # last: the resume point is written only once the files that resuming reads (best_stg1) are whole
        self.save(*names, "last.pth", stats=stats)
        self.logger.epoch_line(record)
        self.logger.scalars({name: value for name, value in zip(STAT_NAMES, stats["stats"])}, epoch, "Test")
        if dist.is_main():
            print(f"epoch {epoch}: AP50:95 {ap:.4f}  AP50 {stats['stats'][1]:.4f}  best {self.best['ap']:.4f} "
                  f"(epoch {self.best['epoch']})  {seconds:.1f}s")
            if stats.get("dropped"):
                print(f"warning: {stats['dropped']} predictions with a non-finite box or score were not scored")
        dist.barrier()

    def train_one_epoch(self, epoch: int) -> dict:
        self.model.train()
        self.criterion.train()
        loader = self.train_loader
        totals: dict[str, float] = {}
        good = 0
        plot_freq = self.cfg["plot_train_batch_freq"]
        bar = self.logger.bar(loader, len(loader), f"epoch {epoch}/{self.epochs - 1}")
        for i, (images, targets) in enumerate(bar):
            images = images.to(self.device, non_blocking=True)
            if self.cfg["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = _to_device(targets, self.device)
            if i == 0 and plot_freq and epoch % plot_freq == 0 and dist.is_main():
                plot_batch(images, targets, self.output_dir / f"train_batch_epoch{epoch}.jpg", self.names)
            started = time.perf_counter()
            loss_terms = self.train_step(images, targets, epoch, i)
            if self.cfg["compile"] and self.compile_seconds is None and dist.is_main():
                self.compile_seconds = time.perf_counter() - started
                print(f"compile: the first step took {self.compile_seconds:.1f} s (torch.compile of the backbone, "
                      "encoder, deformable attention's weighted sum and dense loss terms)")
            self.global_step += 1
            # the next step's lr, set once this one is done (the official order)
            self.schedule.set(self.global_step, self.global_step // len(loader))
            if loss_terms is None:
                continue
            good += 1
            for key, value in loss_terms.items():
                totals[key] = totals.get(key, 0.0) + value
            shown = self.distiller.term_names(loss_terms) if self.distiller is not None else []
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_terms['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                **{k: f"{loss_terms[k]:.3f}" for k in shown})
            if self.global_step % self.cfg["print_freq"] == 0:
                self.logger.scalars({"total": loss_terms["loss"]}, self.global_step, "Loss")
                self.logger.scalars({k: loss_terms[k] for k in shown}, self.global_step, "Loss")
                self.logger.scalars({f"pg_{j}": g["lr"] for j, g in enumerate(self.optimizer.param_groups)},
                                    self.global_step, "Lr")
        means = {k: v / max(good, 1) for k, v in totals.items()}
        means = dist.all_reduce_mean(means)
        means["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.distiller is not None:
            means.update(self.distiller.end_epoch(epoch, self.in_stage2(epoch)))
        return means

    def _padded_splits(self, cfg: dict) -> set[str]:
        """The splits whose collate keeps each image's size in a padded batch (collate_fn.padding_mask);
        only a graph with a row that reads the padding mask may take them: another model would see
        boxes normalised to each image, not to the padded canvas, and train on wrong targets."""
        padded = {split for split in ("train", "val")
                  if ((cfg[f"{split}_dataloader"] or {}).get("collate_fn") or {}).get("padding_mask")}
        if padded and not any(row.takes_pixel_mask for row in self.raw_model.rows):
            split = sorted(padded)[0]
            raise ConfigError("padding_mask batches differently sized images for a model that reads the mask, and "
                              "no row of this graph does", where=f"{split}_dataloader.collate_fn.padding_mask",
                              hint="remove padding_mask (the images are resized to one size), or use a decoder "
                                   "that takes pixel_mask (DeformableDETRDecoder)")
        return padded

    def pixel_mask(self, split: str, images, targets) -> dict:
        """{'pixel_mask': [B, H, W]} for a padded split's batch, {} otherwise: the model's extra inputs."""
        return {"pixel_mask": padding_mask(images, targets)} if split in self.padded_splits else {}

    def train_step(self, images, targets, epoch: int, index: int) -> dict | None:
        """One optimizer step; None when the step was skipped for a non-finite loss or gradient."""
        # a skipped step must leave no trace, but its forward already moved the BatchNorm statistics
        buffers = [b.detach().clone() for b in self.raw_model.buffers()]
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            outputs = self.model(images, targets=targets, **self.pixel_mask("train", images, targets))
        distiller = self.distiller
        with torch.autocast(self.device.type, enabled=False):  # losses in fp32
            outputs = _to_float(outputs)
            if distiller is not None:
                outputs = distiller.prepare(images, outputs, epoch, self.amp_dtype, self.use_amp)
            loss_dict = self.criterion(outputs, targets, epoch=epoch)
            if distiller is not None:
                loss_dict.update(distiller.losses(outputs, epoch))
        loss = sum(loss_dict.values())
        bad = not _finite(loss) or not _finite(outputs["pred_boxes"])
        if dist.any_flag(bad):
            _restore(self.raw_model.buffers(), buffers)
            self.skip_step(epoch, index, images, targets, loss_dict, "loss or predicted boxes")
            return None
        self.scaler.scale(loss).backward()
        max_norm = self.cfg["clip_max_norm"]
        self.scaler.unscale_(self.optimizer)
        if distiller is not None:
            distiller.after_backward(self.raw_model, epoch)
        extra = [p for group in self.extra_param_groups() for p in group["params"]]
        parameters = [p for p in [*self.model.parameters(), *extra] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else float("inf"))
        if not _finite(norm) and not self.scaler.is_enabled():  # fp16's scaler skips such steps itself
            _restore(self.raw_model.buffers(), buffers)
            self.skip_step(epoch, index, images, targets, loss_dict, "gradients")
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.raw_model)
        self.bad_in_row = 0
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        terms["loss"] = float(loss.detach())
        return terms

    def skip_step(self, epoch, index, images, targets, loss_dict, what: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_in_row += 1
        self.bad_total += 1
        ids = [int(t["image_id"]) for t in targets if "image_id" in t]
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        bad_terms = {k: v for k, v in terms.items() if not math.isfinite(v)}
        dump = self.output_dir / "debug" / f"nonfinite_epoch{epoch}_step{self.global_step}_rank{dist.rank()}.pth"
        save_atomic({"epoch": epoch, "step": self.global_step, "image_ids": ids, "loss_terms": terms,
                     "images": images.detach().cpu(), "targets": [
                         {k: v.detach().cpu() for k, v in t.items() if isinstance(v, torch.Tensor)} for t in targets]},
                    dump)
        message = (f"non-finite {what} at epoch {epoch} step {index} (global {self.global_step}): "
                   f"{bad_terms or 'loss terms finite'}; image ids {ids}; step skipped "
                   f"({self.bad_in_row} in a row); batch saved to {dump}")
        print(f"warning: {message}")
        if self.bad_in_row >= self.cfg["max_bad_steps"]:
            raise TrainingDiverged(
                f"{self.bad_in_row} consecutive steps had a non-finite {what}; last: image ids {ids}",
                where=f"epoch {epoch}",
                hint="lower the lr or turn off --use-amp (fp16 overflows), check those images' boxes "
                     f"(dumps in {dump.parent}); max_bad_steps sets the limit")

    # ------------------------------------------------------------ evaluation
    def eval_module(self):
        return self.ema.module if self.ema is not None else self.raw_model

    @torch.no_grad()
    def evaluate(self, verbose: bool = False) -> dict:
        module = self.eval_module()
        module.eval()
        self.postprocessor.eval()
        self.evaluator.reset()
        threshold = self.cfg["eval_score_threshold"]
        for images, targets in self.val_loader:
            images = images.to(self.device)
            outputs = module(images, **self.pixel_mask("val", images, targets))
            results = self.to_original_boxes(self.postprocessor, outputs, targets)
            if threshold > 0:
                results = [{k: v[r["scores"] >= threshold] for k, v in r.items()} for r in results]
            self.evaluator.update({int(t["image_id"]): r for t, r in zip(targets, results)})
        self.evaluator.synchronize()
        stats = self.evaluator.evaluate(verbose=verbose) if dist.is_main() else None
        return dist.broadcast_object(stats)

    def to_original_boxes(self, postprocessor, outputs, targets) -> list[dict]:
        """Post-process into xyxy boxes of each original image. When Resize recorded its geometry
        (scale, pad), boxes are mapped to the network input and the resize is undone exactly, which
        is right for letterbox too; otherwise normalised boxes are scaled by the original size."""
        from data.transforms import restore_boxes

        if not all("scale" in t and "pad" in t for t in targets):
            return postprocessor(outputs, torch.stack([t["orig_size"] for t in targets]).to(self.device))
        results = postprocessor(outputs, torch.stack([t["size"] for t in targets]).to(self.device))
        for result, target in zip(results, targets):
            result["boxes"] = restore_boxes(result["boxes"], target["scale"], target["pad"],
                                            target["orig_size"]).to(result["boxes"].dtype)
        return results

    def test(self) -> dict:
        """`--test-only`: COCO AP, per-class table, YOLO metrics, TIDE errors, confusion matrix, speed, size."""
        try:
            return self._test()
        finally:
            self.close()

    def _test(self) -> dict:
        from metrics.coco_eval import measure_speed, model_stats
        from metrics.detection import confusion_matrix, plot_confusion_matrix
        from metrics.tide import evaluate as tide_errors
        from metrics.tide import plot as plot_tide

        stats = self.evaluate(verbose=dist.is_main())
        if not dist.is_main():
            return stats
        out = self.output_dir
        if stats.get("dropped"):
            print(f"warning: {stats['dropped']} predictions with a non-finite box or score were not scored "
                  "(the model's weights or inputs hold NaN/inf)")
        if stats.get("per_class"):
            table = format_per_class(stats["per_class"])
            print(table)
            atomic_write_text(out / "per_class.txt", table + "\n")
        if stats.get("yolo"):
            y = stats["yolo"]
            print(f"P {y['precision']:.4f}  R {y['recall']:.4f}  F1 {y['f1']:.4f} (conf {y['confidence']:.3f})  "
                  f"mAP50 {y['mAP50']:.4f}  mAP75 {y['mAP75']:.4f}  mAP50-95 {y['mAP50-95']:.4f}")
        atomic_write_text(out / "predictions.json", json.dumps(self.evaluator.detections))
        if self.evaluator.detections:  # no detections: nothing for TIDE to break down
            # a model trained on the union of the splits' categories may predict some this split lacks
            tide = tide_errors(self.evaluator.coco.dataset, self.evaluator.detections, known_categories=False)
            print(tide.summary())
            plot_tide(tide, out / "tide.png")
            stats["tide"] = tide.as_dict()
        else:
            print("TIDE: the model made no detections on this split; no error breakdown")
        matrix = confusion_matrix(self.evaluator.coco, self.evaluator.detections, self.category_ids)
        plot_confusion_matrix(matrix, self.names, out / "confusion_matrix.png")
        module = self.eval_module()
        info = model_stats(module, self.imgsz)
        info.update(measure_speed(module, self.postprocessor, self.imgsz, self.device))
        print(f"params {info['params']:,} ({info['params_deploy']:,} deployed), {info['size_mb']:.2f} MB, "
              f"{info['gflops']:.3f} GFLOPs at {self.imgsz[0]}x{self.imgsz[1]}; forward {info['forward_ms']:.2f} ms/img, "
              f"post-process {info['postprocess_ms']:.2f} ms/img ({info['fps']:.1f} FPS, batch 1, {self.device})")
        stats["model"] = info
        atomic_write_text(out / "test_stats.json", json.dumps(stats, indent=1))
        return stats

