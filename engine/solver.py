"""The training loop shared by every graph: stages, evaluation, checkpoints, guards.

One run = epochs of (train one epoch -> evaluate the EMA weights -> save). Stage 1 ends at
`train_dataloader.collate_fn.stop_epoch` (the official name): there the strong augmentation stops,
the model and EMA restart from `best_stg1.pth` and the EMA decay becomes `ema_restart_decay`. In
stage 2 an epoch that does not improve AP restarts from `best_stg1.pth` again with the decay
lowered by 1e-4 (DEIM/D-FINE's rule; the official ModelEMA ignores the changed decay because its
decay function captured the first value, ours uses it).

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

from core.checkpoint_io import model_weights, read_checkpoint, save_atomic, strip_module_prefix
from core import dist
from engine import checkpoint
from engine.config import get
from engine.ema import ModelEMA
from metrics.detection import format_per_class
from metrics.coco_eval import STAT_NAMES, CocoEvaluator
from engine.logger import RunLogger, plot_batch
from engine.optim import LRSchedule, build_optimizer, scale_lr
from models.factory import describe_mismatch
from core.errors import CheckpointError, ConfigError, DetrZooError


class TrainingDiverged(DetrZooError):
    """Too many consecutive steps with a non-finite loss, boxes or gradients."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def unique_dir(path: Path) -> Path:
    """`path` if it is free (or empty), else path2, path3, ... (a new run never overwrites an old one)."""
    if not path.exists() or not any(path.iterdir()):
        return path
    n = 2
    while (candidate := path.with_name(f"{path.name}{n}")).exists() and any(candidate.iterdir()):
        n += 1
    return candidate


def _amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _to_float(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
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


class Solver:
    """Builds everything a run needs from a merged config and runs `fit()` or `test()`.

    options: device, seed, use_amp, resume, tuning, output_dir, summary_dir, auto_resume, test_only."""

    def __init__(self, cfg: dict, **options):
        self.cfg = cfg
        self.options = options
        self.device = dist.init(options.get("device") or cfg.get("device"))
        self.seed = int(options["seed"] if options.get("seed") is not None else cfg.get("seed", 0))
        self.test_only = bool(options.get("test_only"))
        seed_everything(self.seed + dist.rank())
        self._derive_epochs()
        self.epochs = int(cfg.get("epochs", 1))
        self.output_dir = self._choose_output_dir()
        self._build_data()
        self._build_model()
        self._build_training()
        self.logger = RunLogger(self.output_dir, self._summary_dir(), progress_bar=cfg.get("progress_bar", True))
        self._save_run_files()

    # ----------------------------------------------------------------- setup
    def _derive_epochs(self) -> None:
        """Fill the epoch schedule and the sizes that the config leaves unset from `epochs` and `imgsz`."""
        import data

        cfg = self.cfg
        if int(cfg.get("epochs") or 0) >= 2:
            data.apply_epochs(cfg)
        else:  # a single epoch has no schedule to derive: augment throughout, no stage 2
            policy = get(cfg, "train_dataloader.dataset.transforms.policy")
            if isinstance(policy, dict) and policy.get("epoch") is None:
                policy["epoch"] = 1
            collate = get(cfg, "train_dataloader.collate_fn")
            if isinstance(collate, dict):  # unset epoch windows fall back to the collate's defaults
                for key in ("stop_epoch", "mixup_epochs", "copyblend_epochs"):
                    if key in collate and collate[key] is None:
                        del collate[key]
        data.apply_imgsz(cfg)

    def _choose_output_dir(self) -> Path | None:
        wanted = self.options.get("output_dir") or self.cfg.get("output_dir") or "outputs/run"
        wanted = Path(wanted)
        resume = self.options.get("resume")
        if self.test_only:  # evaluation output goes beside the checkpoint (run/eval/), never over the run's files
            chosen = unique_dir(Path(self.options["output_dir"]) if self.options.get("output_dir")
                                else Path(resume).parent / "eval")
        elif self.options.get("auto_resume") and not resume and (wanted / "last.pth").is_file():
            self.options["resume"] = str(wanted / "last.pth")
            chosen = wanted
        elif resume and Path(resume).resolve().parent == wanted.resolve():
            chosen = wanted  # continuing a run writes into its own folder
        else:
            chosen = unique_dir(wanted)
        chosen = Path(dist.broadcast_object(str(chosen)))
        if dist.is_main():
            chosen.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        self.cfg["output_dir"] = str(chosen)
        return chosen

    def _summary_dir(self) -> Path:
        return Path(self.options.get("summary_dir") or self.cfg.get("summary_dir") or self.output_dir / "summary")

    def _build_data(self) -> None:
        import data

        cfg = self.cfg
        for key in ("val_dataloader",) if self.test_only else ("train_dataloader", "val_dataloader"):
            if not isinstance(cfg.get(key), dict):
                raise ConfigError(f"missing `{key}` section", where=key, hint="include a dataset recipe (configs/datasets/)")
        distributed = dist.enabled()
        for key in ("train_dataloader", "val_dataloader"):
            section = cfg.get(key)
            if isinstance(section, dict) and section.get("total_batch_size") is not None:
                per_process = dist.split_batch(int(section["total_batch_size"]))
                if section.get("batch_size") not in (None, per_process):
                    raise ConfigError(f"{key}.batch_size {section['batch_size']} contradicts total_batch_size "
                                      f"{section['total_batch_size']} over {dist.world_size()} process(es)",
                                      where=f"{key}.batch_size", hint=f"set only {key}.total_batch_size (the official key)")
                section["batch_size"] = per_process
        self.total_batch_size = int(get(cfg, "train_dataloader.batch_size", 1)) * dist.world_size()
        if not self.test_only:
            scale_lr(cfg, self.total_batch_size)
            self.train_loader = data.build_dataloader(cfg["train_dataloader"], "train", distributed=distributed, seed=self.seed)
        self.val_loader = data.build_dataloader(cfg["val_dataloader"], "val", distributed=distributed, seed=self.seed)
        dataset = self.val_loader.dataset
        self.names = list(dataset.names)
        self.category_ids = list(dataset.category_ids)
        self.nc = int(dataset.num_classes)
        if cfg.get("nc") is not None and int(cfg["nc"]) != self.nc:
            print(f"note: config nc={cfg['nc']} but the dataset has {self.nc} classes; using {self.nc}")
        self.evaluator = CocoEvaluator(dataset.coco, self.category_ids, self.names)

    def _build_model(self) -> None:
        from models import build_model

        cfg = self.cfg
        graph = cfg.get("graph")
        if not graph:
            raise ConfigError("missing `graph` (the model's graph YAML, or the graph itself as a mapping)",
                              where="graph", hint="e.g. graph: graphs/deim/deim-n.yaml")
        if isinstance(graph, str) and not Path(graph).is_file() and self.options.get("config"):
            beside_config = Path(self.options["config"]).parent / graph
            graph = str(beside_config) if beside_config.is_file() else graph
        model = build_model(graph, nc=self.nc, scale=cfg.get("scale"), imgsz=cfg.get("imgsz"), check=False)
        self.imgsz = tuple(model.imgsz)
        if self.options.get("tuning"):
            report = checkpoint.load_for_finetune(model, self.options["tuning"])
            self.finetune_report = report
            if dist.is_main():
                print(checkpoint.format_finetune_report(report))
        self.raw_model = model.to(self.device)
        from models.criterion import build_criterion
        from models.postprocess import PostProcessor

        criterion_cfg = dict(cfg.get("criterion") or {})
        if not criterion_cfg.get("type"):
            raise ConfigError("missing `criterion.type`", where="criterion", hint="e.g. DEIMCriterion (see configs/recipes/)")
        criterion_cfg["num_classes"] = self.nc
        self.criterion = build_criterion(criterion_cfg).to(self.device)
        post_cfg = {k: v for k, v in (cfg.get("postprocessor") or {}).items() if k != "type"}
        post_cfg["num_classes"] = self.nc
        self.postprocessor = PostProcessor(**post_cfg).to(self.device)

    def _build_training(self) -> None:
        cfg = self.cfg
        self.use_amp = bool(self.options.get("use_amp") or cfg.get("use_amp", False))
        self.amp_dtype = _amp_dtype(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.ema = None
        if cfg.get("use_ema", True) and cfg.get("ema") is not False:
            ema_cfg = {k: v for k, v in (cfg.get("ema") or {}).items() if k in ("decay", "warmups", "start")}
            self.ema = ModelEMA(self.raw_model, **ema_cfg)
        self.model = dist.wrap_model(self.raw_model, self.device, bool(cfg.get("sync_bn", False)),
                                     bool(cfg.get("find_unused_parameters", False)))
        self.epoch = -1           # last finished epoch
        self.global_step = 0
        self.best = {"ap": -1.0, "epoch": -1}
        self.stage2 = {"reference": None, "pending_restart": False}
        self.bad_in_row = 0
        self.bad_total = 0
        self.max_bad_steps = int(cfg.get("max_bad_steps", 10))
        collate = get(cfg, "train_dataloader.collate_fn", {}) or {}
        self.stop_epoch = collate.get("stop_epoch")
        self.restart_decay = collate.get("ema_restart_decay", get(cfg, "ema.restart_decay"))
        if not self.test_only:
            self.optimizer = build_optimizer(self.raw_model, cfg.get("optimizer") or {"type": "AdamW", "lr": 1e-4})
            for group in self.extra_param_groups():  # e.g. distillation adapters: trained, kept out of the model
                self.optimizer.add_param_group(dict(group))
                self.optimizer.param_groups[-1].setdefault("initial_lr", self.optimizer.param_groups[-1]["lr"])
            schedule_cfg = {k: cfg[k] for k in ("flat_epoch", "no_aug_epoch") if cfg.get(k) is not None}
            schedule_cfg.update(cfg.get("lr_scheduler") or {"type": "MultiStepLR"})
            self.schedule = LRSchedule(self.optimizer, schedule_cfg,
                                       cfg.get("lr_warmup_scheduler"), len(self.train_loader), self.epochs)
        resume = self.options.get("resume")
        if resume:
            self.load_resume(resume)

    def _save_run_files(self) -> None:
        if not dist.is_main() or self.test_only:
            return
        import yaml

        (self.output_dir / "config.yml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        (self.output_dir / "args.json").write_text(json.dumps(self.options, indent=1, default=str))

    # ------------------------------------------------------------ checkpoints
    def meta(self) -> dict:
        return {"names": self.names, "category_ids": self.category_ids, "nc": self.nc, "imgsz": list(self.imgsz),
                "scale": self.raw_model.scale, "graph": str(self.raw_model.graph_path),
                "graph_spec": self.raw_model.graph_spec, "config": self.cfg}

    def state_dict(self, stats: dict | None = None) -> dict:
        state = {"model": self.raw_model.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": checkpoint.rng_state(), "meta": self.meta(), "stats": stats or {},
                 "solver": {"best": dict(self.best), "stage2": dict(self.stage2), "bad_total": self.bad_total}}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save(self, name: str, stats: dict | None = None) -> None:
        if dist.is_main():
            save_atomic(self.state_dict(stats), self.output_dir / name)

    def _load_weights(self, state: dict, path) -> None:
        mismatch = describe_mismatch(self.raw_model, state["model"])
        if mismatch:
            raise CheckpointError(f"{path} does not fit this model: {mismatch}", where=str(path),
                                  hint="-r resumes the same graph and class count; use -t to fine-tune from other weights")
        self.raw_model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if "ema" in state else {"module": state["model"]})

    def load_resume(self, path) -> None:
        state = read_checkpoint(path)
        if self.test_only:  # the weights training evaluated (EMA first); official releases convert
            weights, _ = model_weights(state)
            weights, conversion = checkpoint.convert_if_official(strip_module_prefix(weights), self.raw_model)
            if conversion and dist.is_main():
                print(f"converted from the official layout: {conversion}")
            self._load_weights({"model": weights}, path)
            return
        if "model" not in state:
            raise CheckpointError(f"{path} has no `model` weights to resume", where=str(path),
                                  hint="use -t for weights-only checkpoints (official releases)")
        self._load_weights(state, path)
        for key, target in (("optimizer", self.optimizer), ("scaler", self.scaler)):
            if key in state:
                target.load_state_dict(state[key])
        self.epoch = int(state.get("epoch", state.get("last_epoch", -1)))
        self.global_step = int(state.get("global_step", (self.epoch + 1) * len(self.train_loader)))
        solver = state.get("solver", {})
        self.best = dict(solver.get("best", self.best))
        self.stage2 = dict(solver.get("stage2", self.stage2))
        self.bad_total = int(solver.get("bad_total", 0))
        if "rng" in state:
            checkpoint.set_rng_state(state["rng"])
        print(f"resumed from {path}: epoch {self.epoch} finished, continuing at epoch {self.epoch + 1}")

    def restart_from_stage1(self, decay: float) -> None:
        """Stage 2: reload the best stage-1 model, EMA, optimizer and scaler; set the EMA decay."""
        dist.barrier()
        path = self.output_dir / "best_stg1.pth"
        if not path.is_file():
            return
        state = read_checkpoint(path)
        self._load_weights(state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.decay = decay
        print(f"stage 2: restarted from {path} (epoch {state['epoch']}), EMA decay {decay:.6f}")

    # ------------------------------------------------------------------ loop
    def seed_epoch(self, epoch: int) -> None:
        seed = self.seed + 1000 * epoch + dist.rank()
        seed_everything(seed)
        for generator in (getattr(self.train_loader, "generator", None),
                          getattr(getattr(self.train_loader, "sampler", None), "generator", None)):
            if isinstance(generator, torch.Generator):
                generator.manual_seed(seed)

    def fit(self, max_epochs: int | None = None) -> dict:
        """Train from the epoch after the last finished one to `epochs` (or `max_epochs` of them now)."""
        import data

        start = self.epoch + 1
        end = self.epochs if max_epochs is None else min(self.epochs, start + max_epochs)
        if dist.is_main():
            params = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
            print(f"training {params:,} parameters for epochs {start}..{self.epochs - 1} on {self.device}, "
                  f"total batch {self.total_batch_size}, output {self.output_dir}")
        stats = {}
        for epoch in range(start, end):
            self.seed_epoch(epoch)
            data.set_epoch(self.train_loader, epoch)
            if self.stop_epoch is not None and epoch == self.stop_epoch and epoch > 0:
                self.restart_from_stage1(self.restart_decay if self.restart_decay is not None else self.ema_decay())
                self.stage2 = {"reference": None, "pending_restart": False}
            elif self.stage2.get("pending_restart"):
                self.restart_from_stage1(self.ema_decay() - 1e-4)
                self.stage2 = {"reference": None, "pending_restart": False}
            started = time.time()
            train_stats = self.train_one_epoch(epoch)
            self.epoch = epoch
            stats = self.evaluate()
            self.after_epoch(epoch, train_stats, stats, time.time() - started)
        if dist.is_main() and end == self.epochs and self.evaluator.results:
            # the final model's val predictions (dataset category ids), for TIDE and other analysis
            self.evaluator.save_predictions(self.output_dir / "predictions_last.json")
        self.logger.close()
        return stats

    def ema_decay(self) -> float:
        return self.ema.decay if self.ema is not None else 0.0

    def in_stage2(self, epoch: int) -> bool:
        return self.stop_epoch is not None and epoch >= self.stop_epoch

    def after_epoch(self, epoch: int, train_stats: dict, stats: dict, seconds: float) -> None:
        ap = stats["stats"][0]
        improved = ap > self.best["ap"]
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
                  "bad_steps": self.bad_total}
        if improved:
            self.save("best_stg2.pth" if self.in_stage2(epoch) else "best_stg1.pth", stats)
        freq = int(self.cfg.get("checkpoint_freq", 0) or 0)
        if freq and (epoch + 1) % freq == 0:
            self.save(f"checkpoint{epoch:04d}.pth", stats)
        # last: the resume point is written only once the files that resuming reads (best_stg1) are whole
        self.save("last.pth", stats)
        self.logger.epoch_line(record)
        self.logger.scalars({name: value for name, value in zip(STAT_NAMES, stats["stats"])}, epoch, "Test")
        if dist.is_main():
            print(f"epoch {epoch}: AP50:95 {ap:.4f}  AP50 {stats['stats'][1]:.4f}  best {self.best['ap']:.4f} "
                  f"(epoch {self.best['epoch']})  {seconds:.1f}s")
        dist.barrier()

    def train_one_epoch(self, epoch: int) -> dict:
        self.model.train()
        self.criterion.train()
        loader = self.train_loader
        totals: dict[str, float] = {}
        good = 0
        plot_freq = int(self.cfg.get("plot_train_batch_freq", 12) or 0)
        bar = self.logger.bar(loader, len(loader), f"epoch {epoch}/{self.epochs - 1}")
        for i, (images, targets) in enumerate(bar):
            self.schedule.set(self.global_step, epoch)
            images = images.to(self.device, non_blocking=True)
            targets = _to_device(targets, self.device)
            if i == 0 and plot_freq and epoch % plot_freq == 0 and dist.is_main():
                plot_batch(images, targets, self.output_dir / f"train_batch_epoch{epoch}.jpg", self.names)
            loss_terms = self.train_step(images, targets, epoch, i)
            self.global_step += 1
            if loss_terms is None:
                continue
            good += 1
            for key, value in loss_terms.items():
                totals[key] = totals.get(key, 0.0) + value
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_terms['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                **{k: f"{loss_terms[k]:.3f}" for k in self.bar_terms(loss_terms)})
            if self.global_step % int(self.cfg.get("print_freq", 10) or 10) == 0:
                self.logger.scalars({"total": loss_terms["loss"]}, self.global_step, "Loss")
                self.logger.scalars({k: loss_terms[k] for k in self.bar_terms(loss_terms)}, self.global_step, "Loss")
                self.logger.scalars({f"pg_{j}": g["lr"] for j, g in enumerate(self.optimizer.param_groups)},
                                    self.global_step, "Lr")
        means = {k: v / max(good, 1) for k, v in totals.items()}
        means = dist.all_reduce_mean(means)
        means["lr"] = self.optimizer.param_groups[0]["lr"]
        return means

    def train_step(self, images, targets, epoch: int, index: int) -> dict | None:
        """One optimizer step; None when the step was skipped for a non-finite loss or gradient."""
        # a skipped step must leave no trace, but its forward already moved the BatchNorm statistics
        buffers = [b.detach().clone() for b in self.raw_model.buffers()]
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            outputs = self.model(images, targets=targets)
        with torch.autocast(self.device.type, enabled=False):  # losses in fp32
            loss_dict = self.criterion(_to_float(outputs), targets, epoch=epoch)
            loss_dict.update(self.extra_losses(images, targets, outputs, epoch))
        loss = sum(loss_dict.values())
        bad = not _finite(loss) or not _finite(outputs["pred_boxes"])
        if dist.any_flag(bad):
            _restore(self.raw_model.buffers(), buffers)
            self.skip_step(epoch, index, images, targets, loss_dict, "loss or predicted boxes")
            return None
        self.scaler.scale(loss).backward()
        max_norm = float(self.cfg.get("clip_max_norm", 0) or 0)
        self.scaler.unscale_(self.optimizer)
        self.after_backward()
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

    # Hooks for a trainer that adds terms (distill.py's DistillSolver); the plain trainer adds nothing.
    def extra_param_groups(self) -> list[dict]:
        """Optimizer groups ({'params': [...], optional lr...}) of trainable modules outside the model."""
        return []

    def extra_losses(self, images, targets, outputs, epoch: int) -> dict:
        """More weighted loss terms for this step, added to the criterion's (computed in fp32)."""
        return {}

    def after_backward(self) -> None:
        """Called with the unscaled gradients of a step, before clipping."""

    def bar_terms(self, loss_terms: dict) -> list[str]:
        """Loss terms shown in the progress bar and logged to TensorBoard each print_freq steps."""
        return []

    def skip_step(self, epoch, index, images, targets, loss_dict, what: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_in_row += 1
        self.bad_total += 1
        ids = [int(t["image_id"]) for t in targets if "image_id" in t]
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        bad_terms = {k: v for k, v in terms.items() if not math.isfinite(v)}
        dump = self.output_dir / "debug" / f"nonfinite_epoch{epoch}_step{self.global_step}_rank{dist.rank()}.pth"
        dump.parent.mkdir(parents=True, exist_ok=True)
        save_atomic({"epoch": epoch, "step": self.global_step, "image_ids": ids, "loss_terms": terms,
                                "images": images.detach().cpu(), "targets": [
                                    {k: v.detach().cpu() for k, v in t.items() if isinstance(v, torch.Tensor)}
                                    for t in targets]}, dump)
        message = (f"non-finite {what} at epoch {epoch} step {index} (global {self.global_step}): "
                   f"{bad_terms or 'loss terms finite'}; image ids {ids}; step skipped "
                   f"({self.bad_in_row} in a row); batch saved to {dump}")
        print(f"warning: {message}")
        if self.bad_in_row >= self.max_bad_steps:
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
        threshold = float(self.cfg.get("eval_score_threshold", 0) or 0)
        for images, targets in self.val_loader:
            images = images.to(self.device)
            results = self.to_original_boxes(self.postprocessor, module(images), targets)
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
        from metrics.tide import evaluate as tide_errors
        from metrics.tide import plot as plot_tide
        from metrics.detection import confusion_matrix, plot_confusion_matrix
        from metrics.coco_eval import measure_speed, model_stats

        stats = self.evaluate(verbose=dist.is_main())
        if not dist.is_main():
            return stats
        out = self.output_dir
        if stats.get("per_class"):
            table = format_per_class(stats["per_class"])
            print(table)
            (out / "per_class.txt").write_text(table + "\n")
        if stats.get("yolo"):
            y = stats["yolo"]
            print(f"P {y['precision']:.4f}  R {y['recall']:.4f}  F1 {y['f1']:.4f} (conf {y['confidence']:.3f})  "
                  f"mAP50 {y['mAP50']:.4f}  mAP75 {y['mAP75']:.4f}  mAP50-95 {y['mAP50-95']:.4f}")
        self.evaluator.save_predictions(out / "predictions.json")
        tide = tide_errors(self.evaluator.coco.dataset, self.evaluator.detections)
        print(tide.summary())
        plot_tide(tide, out / "tide.png")
        stats["tide"] = tide.as_dict()
        matrix = confusion_matrix(self.evaluator.coco, self.evaluator.detections, self.category_ids)
        plot_confusion_matrix(matrix, self.names, out / "confusion_matrix.png")
        module = self.eval_module()
        info = model_stats(module, self.imgsz)
        info.update(measure_speed(module, self.postprocessor, self.imgsz, self.device))
        print(f"params {info['params']:,} ({info['params_deploy']:,} deployed), {info['size_mb']:.2f} MB, "
              f"{info['gflops']:.3f} GFLOPs at {self.imgsz[0]}x{self.imgsz[1]}; forward {info['forward_ms']:.2f} ms/img, "
              f"post-process {info['postprocess_ms']:.2f} ms/img ({info['fps']:.1f} FPS, batch 1, {self.device})")
        stats["model"] = info
        (out / "test_stats.json").write_text(json.dumps(stats, indent=1))
        return stats
