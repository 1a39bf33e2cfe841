"""Distillation: a component the trainer holds (engine.solver.Solver builds a `Distiller` when the run
config has a `distill:` section), with a frozen teacher beside the student.

It adds the terms that the `distill:` section asks for (every key is optional except where noted;
`DistillConfig` below declares them):

    distill:
      kd_loss_type: all          # logit | feature | all | none (none: only the foundation term)
      weight: 1.0                # factor on every distillation term
      schedule: constant         # constant | linear | cosine: the factor decays to 0 across the window
      epoch_window: [0, 1.0]     # [start, end): ints are epochs, floats fractions of `epochs`
      adapter_lr: ~              # lr of the adapters / projector (default: the optimizer's lr)
      logit:
        matching: hungarian      # hungarian | iou | index  (index needs equal query counts)
        cost_class: 2.0          # hungarian costs: class-probability L1, box L1, -GIoU
        cost_bbox: 5.0
        cost_giou: 2.0
        temperature: 1.0         # of the class BCE
        ld_temperature: 5.0      # of the corner-distribution KL (D-FINE-style heads)
        layers: final            # final | all (every student decoder layer learns the teacher's final one)
        layer_weights: ~         # with `all`: one weight per student layer, first auxiliary layer to final
        weights: {cls: 1.0, bbox: 5.0, giou: 2.0, ld: 1.0}
      feature:
        adapter: auto            # auto (1x1 conv where channels differ) | always
        adapter_norm: true       # BN after the adapter conv
        pairs:                   # graph rows, [row, output] for a row that returns several maps
          - {student: 3, teacher: 5, loss: cwd, weight: 1.0, tau: 1.0}      # loss: mimic|cwd|mgd|ickd|sp
          - {student: 2, teacher: 3, loss: mgd, alpha: 2.0e-5, lambda: 0.65}
      foundation:                # RT-DETRv4: a ViT's patch tokens teach a student row (needs no -tc)
        model: vit_base_patch16_224   # a timm model, built here with pretrained=False
        weights: path/to/vit.pth      # required: a local state dict (nothing is downloaded)
        model_kwargs: {}
        student: 5                    # the row (or [row, output]) whose map the projector reads
        pool: 2                       # average-pool the normalised image first (RT-DETRv4 uses 2)
        mean: [0.485, 0.456, 0.406]
        std: [0.229, 0.224, 0.225]
        weight: 5.0
        adaptive: {enabled: true, rho: 11.0, delta: 1.0, default_weight: 20.0}
        grad_share_params: ~          # regex over qualified names; default: the student row's parameters

Student features come from forward hooks on the tapped rows (so DDP's forward is untouched) and keep
their gradient; teacher features come from `Detector.run(..., taps=...)` under no_grad. The teacher is
always in eval mode and is never saved; the adapters, the projector and the adaptive weight are saved
with the student (`distill` in the checkpoint) and restored by -r.

The adaptive foundation weight follows RT-DETRv4's trainer: after each epoch, the share (in %) of the
gradient L1 norm that falls on the supervised part of the student is compared with [rho - delta,
rho + delta]; outside it the weight is multiplied by p_target (1 - p) / (p (1 - p_target)), where
p_target is the band's far bound (rho + delta below the band, rho - delta above it), the ratio at
least 0.1 and the weight kept within [w / 10, 10 w]; in stage 2, or with no gradient share, it is
`default_weight`.
"""
from __future__ import annotations

import math
import re
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator
from torch import nn

from core import dist
from core.checkpoint_io import model_weights, read_checkpoint
from core.errors import CheckpointError, ConfigError
from core.schema import Section, validate_section
from engine.distill_losses import FEATURE_LOSSES, MATCHING, FeaturePair, logit_losses, match_queries
from engine.optim import qualified_names
from models.criterion.feature_distill import cosine_distillation_loss

RowRef = int | tuple[int, int]   # a graph row, or [row, output] of a row that returns several maps


# ------------------------------------------------------------------------------ config
class LogitWeights(Section):
    cls: NonNegativeFloat = 1.0
    bbox: NonNegativeFloat = 5.0
    giou: NonNegativeFloat = 2.0
    ld: NonNegativeFloat = 1.0


class LogitConfig(Section):
    matching: Literal[MATCHING] = "hungarian"
    cost_class: NonNegativeFloat = 2.0
    cost_bbox: NonNegativeFloat = 5.0
    cost_giou: NonNegativeFloat = 2.0
    temperature: PositiveFloat = 1.0
    ld_temperature: PositiveFloat = 5.0
    layers: Literal["final", "all"] = "final"
    layer_weights: list[NonNegativeFloat] | None = None
    weights: LogitWeights = LogitWeights()


class PairConfig(Section):
    student: RowRef
    teacher: RowRef
    loss: Literal[FEATURE_LOSSES] = "mimic"
    weight: NonNegativeFloat = 1.0
    tau: PositiveFloat = 1.0                                   # cwd
    alpha: PositiveFloat = 2e-5                                # mgd
    lambda_: float = Field(0.65, alias="lambda", ge=0, le=1)   # mgd: the masked fraction


class FeatureConfig(Section):
    adapter: Literal["auto", "always"] = "auto"   # auto: a 1x1 conv where the widths differ
    adapter_norm: bool = True
    pairs: list[PairConfig] = Field(min_length=1)


class AdaptiveConfig(Section):
    enabled: bool = False
    rho: float = 11.0
    delta: NonNegativeFloat = 1.0
    default_weight: NonNegativeFloat | None = None


class FoundationConfig(Section):
    model: str                          # a timm model name, built with pretrained=False
    weights: str | None = None          # required: a local state dict (nothing is downloaded)
    model_kwargs: dict = {}
    student: RowRef
    pool: PositiveInt = 2
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    weight: NonNegativeFloat = 5.0
    adaptive: AdaptiveConfig = AdaptiveConfig()
    grad_share_params: str | None = None

    @field_validator("grad_share_params")
    @classmethod
    def _regex(cls, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"bad regex {value!r}: {err}") from None
        return value


class DistillConfig(Section):
    kd_loss_type: Literal["logit", "feature", "all", "none"] = "all"
    weight: NonNegativeFloat = 1.0
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    epoch_window: tuple[int | float, int | float] = (0, 1.0)   # ints are epochs, floats fractions of `epochs`
    adapter_lr: PositiveFloat | None = None
    logit: LogitConfig = LogitConfig()
    feature: FeatureConfig | None = None
    foundation: FoundationConfig | None = None


def check_distill(section) -> dict:
    """The `distill:` section validated, defaults filled."""
    cfg = validate_section(DistillConfig, section, "distill")
    if cfg.kd_loss_type in ("feature", "all") and cfg.feature is None:
        raise ConfigError(f"kd_loss_type {cfg.kd_loss_type} needs feature pairs", where="distill.feature.pairs",
                          hint="e.g. feature: {pairs: [{student: 3, teacher: 5, loss: cwd}]}")
    return cfg.model_dump(by_alias=True)


# ------------------------------------------------------------------------------ schedule
def epoch_window(window, epochs: int) -> tuple[int, int]:
    """[start, end) in epochs from the config's pair (ints are epochs, floats fractions of `epochs`)."""
    start, end = (int(v) if isinstance(v, int) else int(round(v * epochs)) for v in window)
    if not 0 <= start < end:
        raise ConfigError(f"epoch_window {list(window)} is empty (start {start}, end {end} over {epochs} epochs)",
                          where="distill.epoch_window", hint="end must be after start, e.g. [0, 0.5]")
    return start, end


def schedule_factor(kind: str, epoch: int, start: int, end: int) -> float:
    """The distillation factor at `epoch`: 0 outside [start, end); inside it decays from 1."""
    if not start <= epoch < end:
        return 0.0
    progress = (epoch - start) / (end - start)
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def adapted_weight(weight: float, share: float, rho: float, delta: float, default_weight: float | None,
                   stage2: bool) -> float:
    """RT-DETRv4's epoch-end rule for the foundation weight from the mean gradient share (%)."""
    if share < 1e-6 or stage2:
        return default_weight if default_weight is not None else weight
    low, high = rho - delta, rho + delta
    if low <= share <= high or weight <= 1e-6:
        return weight
    p, target = share / 100.0, (high if share < low else low) / 100.0
    ratio = max(target * (1.0 - p) / (p * (1.0 - target)), 0.1)
    return min(max(weight * ratio, weight / 10.0), weight * 10.0)


# ------------------------------------------------------------------------------ teachers
def build_teacher(cfg: dict, weights_path: str, device) -> nn.Module:
    """A frozen detector from its run config (composed) and weights (ours, or official via models.convert)."""
    from models.factory import load_detector

    model, _, _ = load_detector(weights_path, cfg, device)
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ViTTeacher(nn.Module):
    """A vision foundation model's patch tokens as a [B, D, h, w] map (RT-DETRv4's teacher).

    Any timm model, built locally with pretrained=False and loaded from a local state dict. The image
    is normalised and average-pooled by `pool` first, as RT-DETRv4 does for DINOv3."""

    def __init__(self, model: str, weights: str | None, model_kwargs: dict | None = None, pool: int = 2,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        import timm

        kwargs = {"pretrained": False, "num_classes": 0, **(model_kwargs or {})}
        try:
            self.model = timm.create_model(model, dynamic_img_size=True, **kwargs)
        except TypeError:  # not a ViT: no dynamic_img_size; its forward_features gives a map already
            self.model = timm.create_model(model, **kwargs)
        except RuntimeError as err:
            raise ConfigError(f"timm cannot build {model!r}: {err}", where="distill.foundation.model") from None
        if not weights:
            raise ConfigError("the foundation teacher needs local weights", where="distill.foundation.weights",
                              hint="a state dict of the timm model (nothing is downloaded)")
        load_state(self.model, weights)
        self.pool = int(pool)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        freeze(self)

    @property
    def width(self) -> int:
        return int(getattr(self.model, "embed_dim", None) or self.model.num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        tokens = self.model.forward_features(x)
        if tokens.dim() == 4:
            return tokens
        patch = self.model.patch_embed.patch_size
        grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
        tokens = tokens[:, getattr(self.model, "num_prefix_tokens", 0):]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def load_state(model: nn.Module, path: str) -> None:
    state, _ = model_weights(read_checkpoint(path), prefer_ema=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the foundation model: {len(missing)} missing (e.g. "
                              f"{list(missing)[:3]}), {len(unexpected)} unexpected (e.g. {list(unexpected)[:3]})",
                              where="distill.foundation.weights",
                              hint="convert the weights to the timm model's names, or pick the matching timm model")


# ------------------------------------------------------------------------------ helpers
def row_ref(value, where: str) -> tuple[int, int | None]:
    """A graph row as `5` or `[5, 2]` (output 2 of a row that returns several maps)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(f"a row must be an index or [index, output], got {value!r}", where=where)


def pick(feature, ref: tuple[int, int | None], where: str) -> torch.Tensor:
    row, output = ref
    if isinstance(feature, (list, tuple)):
        if output is None or not 0 <= output < len(feature):
            raise ConfigError(f"row {row} returns {len(feature)} maps; name one as [{row}, k]", where=where)
        feature = feature[output]
    if not (isinstance(feature, torch.Tensor) and feature.dim() == 4):
        raise ConfigError(f"row {row} does not give a [B, C, H, W] map", where=where,
                          hint="tap a backbone / encoder row, not the decoder")
    return feature


def check_rows(model: nn.Module, refs, where: str) -> None:
    last = len(model.rows) - 1
    for row, _ in refs:
        if not 0 <= row < last:
            raise ConfigError(f"row {row} is not a feature row of the graph (rows 0..{last - 1})", where=where)


def decoder_core(model: nn.Module) -> nn.Module | None:
    """The D-FINE refinement stack inside the graph's last row (its output carries the corners)."""
    from blocks.decoder._dfine_parts import TransformerDecoder

    return next((m for m in model.layers[-1].modules() if isinstance(m, TransformerDecoder)), None)


def logit_terms(outputs: dict, teacher: dict, spec: dict, weights: dict) -> dict[str, torch.Tensor]:
    """Weighted logit-distillation terms of the student's final layer (and, with layers: all, of each
    auxiliary layer, suffixed _aux_i) against the teacher's final predictions; matching per image."""
    teacher = {k: v.detach().float() for k, v in teacher.items() if v is not None}
    layers = [("", outputs)]
    if spec.get("layers", "final") == "all":
        layers = [(f"_aux_{i}", layer) for i, layer in enumerate(outputs.get("aux_outputs") or [])] + layers
    layer_weights = spec.get("layer_weights") or [1.0] * len(layers)
    if len(layer_weights) != len(layers):
        raise ConfigError(f"layer_weights has {len(layer_weights)} entries for {len(layers)} student layers",
                          where="distill.logit.layer_weights", hint="one per layer, first auxiliary layer to final")
    terms = {}
    for (suffix, layer), layer_weight in zip(layers, layer_weights):
        student = {k: layer[k].float() for k in ("pred_logits", "pred_boxes", "pred_corners") if layer.get(k) is not None}
        indices = [match_queries(student["pred_logits"][b].detach(), student["pred_boxes"][b].detach(),
                                 teacher["pred_logits"][b], teacher["pred_boxes"][b], spec.get("matching", "hungarian"),
                                 spec.get("cost_class", 2.0), spec.get("cost_bbox", 5.0), spec.get("cost_giou", 2.0))
                   for b in range(student["pred_logits"].shape[0])]
        values = logit_losses(student, teacher, indices, spec.get("temperature", 1.0), spec.get("ld_temperature", 5.0))
        for name, value in values.items():
            terms[f"loss_kd_{name}{suffix}"] = value * weights[name] * layer_weight
    return terms


class KDModules(nn.Module):
    """What distillation trains besides the student: feature adapters (+ MGD generators), projector."""

    def __init__(self):
        super().__init__()
        self.pairs = nn.ModuleList()
        self.projector: nn.Module | None = None




# ------------------------------------------------------------------------------ the component
class Distiller:
    """Everything distillation adds to a training run, held by the Solver.

    prepare(images, outputs)  runs the frozen teacher(s) on the batch (before the criterion)
    losses(outputs, epoch)    the weighted distillation terms of this step
    after_backward(model)     averages the adapters' gradients over processes; measures the gradient share
    end_epoch(epoch, stage2)  the epoch's figures (factor, adaptive foundation weight)
    param_groups()            the trainable adapters / projector for the optimizer
    state_dict()/load_state_dict()  what a checkpoint keeps (never the teacher)"""

    def __init__(self, spec: dict, student: nn.Module, imgsz, device, epochs: int, teacher_cfg: dict | None = None,
                 teacher_weights: str | None = None):
        self.spec, self.device, self.imgsz = spec, device, tuple(imgsz)
        self.kind = spec["kd_loss_type"]
        self.window = epoch_window(spec["epoch_window"], epochs)
        self.kd = KDModules().to(device)
        self.student_taps: dict[int, object] = {}
        self.teacher_corners: dict[str, torch.Tensor] = {}
        self.teacher = None
        self.teacher_out, self.teacher_taps, self.foundation_target = None, {}, None
        if self.kind != "none":
            if not (teacher_cfg and teacher_weights):
                raise ConfigError(f"kd_loss_type {self.kind} needs a teacher", where="-tc/-tw",
                                  hint="pass -tc TEACHER_CONFIG -tw TEACHER_WEIGHTS (distill.py)")
            self.teacher = build_teacher(teacher_cfg, teacher_weights, device)
            core = decoder_core(self.teacher)
            if core is not None:
                core.register_forward_hook(lambda m, i, out: self.teacher_corners.__setitem__("corners", out[2][-1]))
        self.use_logit = self.kind in ("logit", "all")
        self.use_feature = self.kind in ("feature", "all")
        if self.use_logit:
            self._set_up_logit(student, spec["logit"])
        self.pair_specs = self._set_up_features(student, spec["feature"]) if self.use_feature else []
        self.foundation = self._set_up_foundation(student, spec["foundation"]) if spec["foundation"] else None
        self.shares: list[float] = []

    # ------------------------------------------------------------- set-up
    def _probe(self, model: nn.Module, rows) -> tuple:
        """Row outputs of one eval forward at the student's input size (for shapes and widths)."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out, taps = model.run(torch.zeros(1, 3, *self.imgsz, device=self.device), taps=rows)
        model.train(was_training)
        self.teacher_corners.clear()
        return out, taps

    def _set_up_logit(self, student: nn.Module, spec: dict) -> None:
        self.logit_spec, self.logit_weights = spec, dict(spec["weights"])
        where = "distill.logit"
        student_out, _ = self._probe(student, ())
        teacher_out, _ = self._probe(self.teacher, ())
        s_classes, t_classes = student_out["pred_logits"].shape[-1], teacher_out["pred_logits"].shape[-1]
        if s_classes != t_classes:
            raise ConfigError(f"logit distillation needs the same classes: the student predicts {s_classes}, "
                              f"the teacher {t_classes}", where="distill.kd_loss_type",
                              hint="train the teacher on the student's dataset, or use kd_loss_type: feature")
        s_queries, t_queries = student_out["pred_logits"].shape[1], teacher_out["pred_logits"].shape[1]
        if spec["matching"] == "index" and s_queries != t_queries:
            raise ConfigError(f"matching: index pairs query i with query i, but the student has {s_queries} "
                              f"queries and the teacher {t_queries}", where=f"{where}.matching",
                              hint="use matching: hungarian or iou, or give both decoders the same num_queries")
        s_core, t_core = decoder_core(student), decoder_core(self.teacher)
        self.use_ld = s_core is not None and t_core is not None and self.logit_weights["ld"] > 0
        if self.logit_weights["ld"] > 0 and not self.use_ld and dist.is_main():
            side = "student" if s_core is None else "teacher"
            print(f"note: corner distillation (distill.logit.weights.ld) is off: the {side}'s decoder has no "
                  f"D-FINE corner distributions; the other logit terms still apply")
        if self.use_ld and s_core.reg_max != t_core.reg_max:
            raise ConfigError(f"corner distillation needs the same reg_max: student {s_core.reg_max}, teacher "
                              f"{t_core.reg_max}", where=f"{where}.weights.ld",
                              hint="set distill.logit.weights.ld: 0, or give both decoders the same reg_max")

    def _set_up_features(self, student: nn.Module, spec: dict) -> list[dict]:
        specs = [{"student": row_ref(p["student"], f"distill.feature.pairs[{i}].student"),
                  "teacher": row_ref(p["teacher"], f"distill.feature.pairs[{i}].teacher"),
                  "loss": p["loss"], "weight": p["weight"]} for i, p in enumerate(spec["pairs"])]
        check_rows(student, [s["student"] for s in specs], "distill.feature.pairs: student")
        check_rows(self.teacher, [s["teacher"] for s in specs], "distill.feature.pairs: teacher")
        _, s_taps = self._probe(student, {s["student"][0] for s in specs})
        _, t_taps = self._probe(self.teacher, {s["teacher"][0] for s in specs})
        for i, (s, pair) in enumerate(zip(specs, spec["pairs"])):
            where = f"distill.feature.pairs[{i}]"
            c_student = pick(s_taps[s["student"][0]], s["student"], where).shape[1]
            c_teacher = pick(t_taps[s["teacher"][0]], s["teacher"], where).shape[1]
            self.kd.pairs.append(FeaturePair(
                s["loss"], c_student, c_teacher, adapter=spec["adapter"], norm=spec["adapter_norm"],
                tau=pair["tau"], alpha=pair["alpha"], lam=pair["lambda"]).to(self.device))
        return specs

    def _set_up_foundation(self, student: nn.Module, spec: dict) -> dict:
        where = "distill.foundation"
        teacher = ViTTeacher(spec["model"], spec["weights"], spec["model_kwargs"], spec["pool"], spec["mean"], spec["std"])
        ref = row_ref(spec["student"], f"{where}.student")
        check_rows(student, [ref], f"{where}.student")
        _, taps = self._probe(student, {ref[0]})
        width = pick(taps[ref[0]], ref, f"{where}.student").shape[1]
        # a linear map per token, as RT-DETRv4's projector
        self.kd.projector = nn.Conv2d(width, teacher.width, 1).to(self.device)
        pattern = spec["grad_share_params"] or rf"^\w+\.layers\.{ref[0]}\."
        shared = [name for name, q in qualified_names(student).items() if re.search(pattern, q)]
        if spec["adaptive"]["enabled"] and not shared:
            raise ConfigError(f"grad_share_params {pattern!r} matches no student parameter", where=f"{where}.grad_share_params",
                              hint="a regex over names like encoder.layers.5.encoder.0.layers.0.linear1.weight")
        return {"teacher": teacher.to(self.device), "ref": ref, "weight": spec["weight"],
                "adaptive": spec["adaptive"], "shared": set(shared)}

    def attach(self, student: nn.Module) -> None:
        """Forward hooks that keep the tapped rows' training outputs (with their gradient); attached
        after the EMA copy, so the EMA model carries none, and outside DDP's forward."""
        rows = {s["student"][0] for s in self.pair_specs}
        if self.foundation is not None:
            rows.add(self.foundation["ref"][0])

        def keep(row):
            def hook(module, inputs, output):
                if module.training:
                    self.student_taps[row] = output
            return hook

        for row in sorted(rows):
            student.layers[row].register_forward_hook(keep(row))

    def param_groups(self) -> list[dict]:
        params = list(self.kd.parameters())
        if not params:
            return []
        group = {"params": params}
        if self.spec["adapter_lr"] is not None:
            group["lr"] = self.spec["adapter_lr"]
        return [group]

    # ------------------------------------------------------------- each step
    def factor(self, epoch: int) -> float:
        return schedule_factor(self.spec["schedule"], epoch, *self.window) * self.spec["weight"]

    @torch.no_grad()
    def prepare(self, images, outputs: dict, epoch: int, amp_dtype, use_amp: bool) -> dict:
        """Run the teacher(s) on this batch while the distillation window is open."""
        self.teacher_out, self.teacher_taps, self.foundation_target = None, {}, None
        if self.factor(epoch) == 0:
            return outputs
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
            if self.teacher is not None:
                self.teacher.eval()
                self.teacher_out, self.teacher_taps = self.teacher.run(
                    images, taps={s["teacher"][0] for s in self.pair_specs})
            if self.foundation is not None:
                self.foundation_target = self.foundation["teacher"](images).float()
        return outputs

    def losses(self, outputs: dict, epoch: int) -> dict:
        factor = self.factor(epoch)
        taps, self.student_taps = self.student_taps, {}
        if factor == 0:
            return {}
        losses = {}
        if self.use_logit:
            losses.update(self._logit_terms(outputs, self.teacher_out))
        for i, (s, pair) in enumerate(zip(self.pair_specs, self.kd.pairs)):
            student = pick(taps[s["student"][0]], s["student"], "distill.feature").float()
            teacher = pick(self.teacher_taps[s["teacher"][0]], s["teacher"], "distill.feature").float()
            losses[f"loss_kd_{s['loss']}_{i}"] = pair(student, teacher) * s["weight"]
        if self.foundation is not None:
            f = self.foundation
            student = self.kd.projector(pick(taps[f["ref"][0]], f["ref"], "distill.foundation").float())
            losses["loss_distill"] = cosine_distillation_loss(student, self.foundation_target) * f["weight"]
        return {name: value * factor for name, value in losses.items()}

    def _logit_terms(self, outputs: dict, teacher_out: dict) -> dict:
        teacher = {"pred_logits": teacher_out["pred_logits"], "pred_boxes": teacher_out["pred_boxes"]}
        if self.use_ld and "corners" in self.teacher_corners:
            teacher["pred_corners"] = self.teacher_corners.pop("corners")
        elif not self.use_ld:
            outputs = {**outputs, "pred_corners": None, "aux_outputs": [
                {**layer, "pred_corners": None} for layer in outputs.get("aux_outputs") or []]}
        return logit_terms(outputs, teacher, self.logit_spec, self.logit_weights)

    def after_backward(self, student: nn.Module, epoch: int) -> None:
        if dist.enabled():  # the adapters live outside the DDP model: average their gradients here
            for p in self.kd.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= dist.world_size()
        f = self.foundation
        if f is not None and f["adaptive"]["enabled"] and self.factor(epoch) > 0:
            shared, total = [], []
            for name, p in student.named_parameters():
                if p.grad is not None:
                    value = p.grad.detach().abs().sum()
                    total.append(value)
                    if name in f["shared"]:
                        shared.append(value)
            total_l1 = torch.stack(total).sum().item() if total else 0.0
            share = torch.stack(shared).sum().item() / total_l1 * 100.0 if shared and total_l1 > 0 else 0.0
            self.shares.append(share if math.isfinite(share) else 0.0)

    @staticmethod
    def term_names(loss_terms: dict) -> list[str]:
        """The distillation terms among a step's loss terms (shown in the progress bar and logged)."""
        return [k for k in loss_terms if k.startswith("loss_kd_") or k == "loss_distill"]

    def end_epoch(self, epoch: int, stage2: bool) -> dict:
        figures = {"kd_factor": self.factor(epoch)}
        f = self.foundation
        if f is not None:
            if f["adaptive"]["enabled"] and self.factor(epoch) > 0:
                share = dist.all_reduce_mean({"share": sum(self.shares) / len(self.shares) if self.shares else 0.0})
                a = f["adaptive"]
                figures["distill_grad_share"] = share["share"]
                f["weight"] = adapted_weight(f["weight"], share["share"], a["rho"], a["delta"], a["default_weight"],
                                             stage2)
            self.shares = []
            figures["distill_weight"] = f["weight"]
        return figures

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"modules": self.kd.state_dict(),
                "foundation_weight": self.foundation["weight"] if self.foundation else None}

    def load_state_dict(self, saved: dict | None, path, resuming: bool) -> None:
        if saved is None:
            if any(True for _ in self.kd.parameters()) and resuming:
                raise CheckpointError(f"{path} was not written with distillation (no adapters to resume)",
                                      where=str(path), hint="start distillation from these weights with -t instead of -r")
            return
        try:
            self.kd.load_state_dict(saved["modules"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: its distillation adapters do not fit this distill config: "
                                  f"{str(err).splitlines()[0]}", where=str(path),
                                  hint="resume with the distill section the run started with") from None
        if self.foundation is not None and saved.get("foundation_weight") is not None:
            self.foundation["weight"] = float(saved["foundation_weight"])
