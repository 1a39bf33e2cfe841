"""Distillation: a component the trainer holds (engine.solver.Solver builds a `Distiller` when the run
config has a `distill:` section), with a frozen teacher beside the student.

It adds the terms that the `distill:` section asks for (every key is optional except where noted;
`DistillConfig` below declares them):

    distill:
      kd_loss_type: all          # logit | feature | all | none (none: only the foundation term)
      weight: 1.0                # factor on every detector-teacher term (loss_kd_*)
      schedule: constant         # constant | linear | cosine: the factor decays to 0 across the window
      epoch_window: [0, 1.0]     # [start, end): ints are epochs, floats fractions of `epochs`
      adapter_lr: ~              # lr of the feature adapters (default: the optimizer's lr)
      logit:
        matching: hungarian      # hungarian | iou | index  (index needs equal query counts)
        cost_class: 2.0          # hungarian costs: class-probability L1, box L1, -GIoU
        cost_bbox: 5.0
        cost_giou: 2.0
        weighted_matching: true  # hungarian: each teacher query's costs times its confidence (as the losses)
        temperature: 1.0         # of the class BCE
        cls_gamma: 2.0           # quality-focal exponent of the class BCE (0: plain BCE)
        ld_temperature: 5.0      # of the corner-distribution KL (D-FINE-style heads)
        layers: final            # final | all (every student decoder layer learns the teacher's final one)
        layer_weights: ~         # with `all`: one weight per student layer, first auxiliary layer to final
        proposals: false         # also the first layer's head (_pre) and the encoder's proposals (_enc_0), which
                                 # select the queries: needed when the ground-truth loss is off
        denoising: false         # the teacher also answers the student's denoising queries (the same noised
                                 # labels and boxes, its own embedding) and each student denoising query learns
                                 # the teacher's answer to it (_dn_i; _dn_pre with proposals)
        weights: {cls: 1.0, bbox: 5.0, giou: 2.0, ld: 1.0}
      feature:
        adapter: auto            # auto (1x1 conv where channels differ) | always
        adapter_norm: true       # BN after the adapter conv
        pairs:                   # graph rows, [row, output] for a row that returns several maps
          - {student: 3, teacher: 5, loss: cwd, weight: 1.0, tau: 1.0}      # loss: mimic|cwd|mgd|ickd|sp
          - {student: 2, teacher: 3, loss: mgd, alpha: 2.0e-5, lambda: 0.65}
      foundation:                # RT-DETRv4's teacher: a ViT whose patch tokens the graph's projector learns (no -tc)
        model: dinov3_vitb16          # ours, Meta's layout (dinov3_vits16, dinov3_vits16plus, dinov3_vitb16),
                                      # or any timm model (timm's own checkpoint filter converts what it can)
        weights: path/to/dinov3_vitb16_pretrain_lvd1689m.pth   # required: a local file (nothing is downloaded)
        model_kwargs: {}              # extra arguments of the model
        pool: 2                       # average-pool the normalised image first (RT-DETRv4 uses 2)
        mean: [0.485, 0.456, 0.406]
        std: [0.229, 0.224, 0.225]

The official RT-DETRv4 `teacher_model:` section (DINOv3TeacherModel) is read as `distill.foundation`
(engine/vocabulary.py).

Student features come from forward hooks on the tapped rows (so DDP's forward is untouched) and keep
their gradient; teacher features come from `Detector.run(..., taps=...)` under no_grad. The teacher is
always in eval mode and is never saved; the adapters are saved with the student (`distill` in the
checkpoint) and restored by -r. `weight`, `schedule` and `epoch_window` shape the detector teacher's
terms (`loss_kd_*`).

The foundation term is RT-DETRv4's, as the official trainer computes it: the teacher's patch tokens
(fp32, no autocast) go into the outputs as `teacher_encoder_output`; the criterion's `distill` term
compares them with the graph's `student_distill_output` (HybridEncoder `distill_teacher_dim`: a
linear projector of the last AIFI output) by cosine and weighs it by `weight_dict.loss_distill`, its
one weight. With the criterion's `distill_adaptive_params: {enabled, rho, delta, default_weight}`
the trainer adapts that weight after each epoch: the share (in %) of the gradient L1 norm that falls
on the encoder's AIFI layers, averaged over the epoch's steps, is compared with [rho - delta,
rho + delta]; outside it the weight is multiplied by p_target (1 - p) / (p (1 - p_target)), where
p_target is the band's far bound (rho + delta below the band, rho - delta above it), the ratio at
least 0.1 and the weight kept within [w / 10, 10 w]; from `stop_epoch` on, or with a share below
1e-6 %, it becomes `default_weight`. Two official quirks are not copied: the official measures the
share on parameter names that exist only under DDP (`module.encoder.encoder`), so a single-process
run measures 0 % and resets the weight to `default_weight` every epoch, and it updates the weight on
the main process only, so under DDP the ranks train with different weights; here every run measures
the AIFI layers and every rank applies the same update. The adapted weight is saved in the
checkpoint and restored by -r (the official restarts it from the config).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from blocks.backbone._vit import DINOV3_ARCHS, DINOv3ViT
from core import dist
from core.checkpoint_io import model_weights, read_checkpoint
from core.errors import CheckpointError, ConfigError
from core.schema import Section, validate_section
from blocks.decoder._denoising import replay_denoising
from engine.distill_losses import FEATURE_LOSSES, MATCHING, FeaturePair, edge_bins, logit_losses, match_queries

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
    weighted_matching: bool = True
    temperature: PositiveFloat = 1.0
    ld_temperature: PositiveFloat = 5.0
    cls_gamma: NonNegativeFloat = 2.0
    layers: Literal["final", "all"] = "final"
    layer_weights: list[NonNegativeFloat] | None = None
    proposals: bool = False
    denoising: bool = False
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


class FoundationConfig(Section):
    model: str = "dinov3_vitb16"        # ours (Meta's layout) or a timm model name
    weights: str | None = None          # required: a local file (nothing is downloaded)
    model_kwargs: dict = {}
    pool: PositiveInt = 2
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


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
    if start >= epochs:
        raise ConfigError(f"epoch_window {list(window)} starts at epoch {start}, but the run has {epochs} epochs "
                          "(0 to {}): the teacher would never teach".format(epochs - 1), where="distill.epoch_window",
                          hint="floats are fractions of `epochs`, e.g. [0, 0.5]; ints are epochs")
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
    if abs(p * (1.0 - target)) < 1e-9:
        return weight
    ratio = max(target * (1.0 - p) / (p * (1.0 - target)), 0.1)
    return min(max(weight * ratio, weight / 10.0), weight * 10.0)


# ------------------------------------------------------------------------------ teachers
def build_teacher(cfg: dict, weights_path: str, device) -> tuple[nn.Module, list[str] | None]:
    """A frozen detector from its run config (composed) and weights (ours, or official via models.convert),
    and the class names its checkpoint records (None for a converted official one, which has none)."""
    from models.factory import load_detector, unused_graph

    try:
        model, _, meta = load_detector(weights_path, cfg, device, quiet=True)
    except (CheckpointError, ConfigError) as err:   # their hints name train.py's -c/-r/-t
        raise type(err)(err.message, where=f"-tw {weights_path}",
                        hint="-tw takes the teacher's checkpoint (ours or an official release) and -tc the run "
                             "config it was trained with") from None
    other = unused_graph(meta, cfg)
    if other and dist.is_main():
        print(f"note: the teacher is built from the graph {weights_path} records, which its weights were trained "
              f"with; the teacher config's {other} differs and is not used")
    return freeze(model), (list(meta["names"]) if meta.get("names") else None)


def check_same_classes(student_names: list[str] | None, teacher_names: list[str] | None, teacher_weights) -> None:
    """Logit distillation teaches the student's class i with the teacher's class i: the same count is not
    enough, the names must match in order (a teacher trained with two categories swapped would teach
    each the other's scores). Unknown names (a converted official checkpoint) cannot be checked."""
    if student_names is None or teacher_names is None or list(student_names) == list(teacher_names):
        return
    differ = next(i for i, (s, t) in enumerate(zip(student_names, teacher_names)) if s != t)
    raise ConfigError(f"logit distillation pairs class i with class i, but class {differ} is "
                      f"{student_names[differ]!r} in the student's data and {teacher_names[differ]!r} in the "
                      f"teacher's checkpoint ({teacher_weights})", where="distill.kd_loss_type",
                      hint="train the teacher on the student's categories in the same order, or use "
                           "kd_loss_type: feature")


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ViTTeacher(nn.Module):
    """A vision foundation model's patch tokens as a [B, D, h, w] map (RT-DETRv4's teacher).

    `model` is one of ours in Meta's DINOv3 layout (blocks.backbone._vit.DINOV3_ARCHS: the weights file
    loads as it is, the map is DINOv3's `x_norm_patchtokens`) or a timm model, built locally and loaded
    from the file through timm's own checkpoint filter (which converts, e.g., Meta's DINOv3 layout for
    timm's `vit_*_dinov3`). The image is normalised and average-pooled by `pool` first, as RT-DETRv4's
    DINOv3TeacherModel does."""

    def __init__(self, model: str, weights: str | None, model_kwargs: dict | None = None, pool: int = 2,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        where = "distill.foundation.weights"
        if not weights:
            raise ConfigError(f"the foundation teacher {model} needs its weights", where=where,
                              hint="a local file, e.g. Meta's dinov3_vitb16_pretrain_lvd1689m.pth "
                                   "(https://github.com/facebookresearch/dinov3): -u distill.foundation.weights=PATH "
                                   "(the official teacher_model.dinov3_weights_path); nothing is downloaded")
        if not Path(weights).is_file():
            raise ConfigError(f"foundation teacher weights not found: {weights}", where=where,
                              hint="give the path of a local weights file")
        kwargs = dict(model_kwargs or {})
        if model in DINOV3_ARCHS:
            self.model = DINOv3ViT(model, taps=(kwargs.get("depth", 12) - 1,), **kwargs)
            load_state(self.model, weights)
            self.patch = self.model.patch_size
        else:
            self.model = timm_model(model, weights, kwargs)
            self.patch = self.model.patch_embed.patch_size[0] if hasattr(self.model, "patch_embed") else None
        self.pool = int(pool)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        freeze(self)

    @property
    def width(self) -> int:
        return int(getattr(self.model, "embed_dim", None) or self.model.num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.eval()  # always: DINOv3 jitters its RoPE coordinates in training mode
        x = (images.float() - self.mean) / self.std
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        if isinstance(self.model, DINOv3ViT):
            tokens = self.model(x)[0]
        else:
            tokens = self.model.forward_features(x)
            if tokens.dim() == 4:  # a convnet: already a map
                return tokens
            tokens = tokens[:, getattr(self.model, "num_prefix_tokens", 0):]
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def timm_model(name: str, weights: str, kwargs: dict) -> nn.Module:
    """A timm model built here and loaded from a local file by timm itself (its checkpoint filter
    maps other layouts, e.g. Meta's DINOv3, onto timm's names); strict: every weight must fit."""
    import timm

    options = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}, "num_classes": 0, **kwargs}
    try:
        try:
            return timm.create_model(name, dynamic_img_size=True, **options)
        except TypeError:  # not a ViT: no dynamic_img_size
            return timm.create_model(name, **options)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ConfigError(f"{name!r} is neither ours ({', '.join(DINOV3_ARCHS)}) nor a timm model",
                              where="distill.foundation.model", hint="e.g. dinov3_vitb16 or vit_base_patch16_dinov3") from None
        raise CheckpointError(f"{weights} does not fit the timm model {name}: {str(err).splitlines()[0][:300]}",
                              where="distill.foundation.weights",
                              hint="pick the timm model that matches the weights (and its model_kwargs)") from None


def load_state(model: nn.Module, path: str) -> None:
    state, _ = model_weights(read_checkpoint(path), prefer_ema=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the foundation model: {len(missing)} missing (e.g. "
                              f"{list(missing)[:3]}), {len(unexpected)} unexpected (e.g. {list(unexpected)[:3]})",
                              where="distill.foundation.weights",
                              hint="pick the model that matches the weights (Meta's DINOv3 layout: dinov3_vitb16 ...; "
                                   "others: a timm model name)")


def feature_projector_owner(model: nn.Module) -> nn.Module | None:
    """The graph's block that carries RT-DETRv4's distillation projector (HybridEncoder with
    distill_teacher_dim > 0), or None."""
    return next((m for m in model.modules() if isinstance(getattr(m, "feature_projector", None), nn.Module)), None)


def freeze_unsupervised_projector(model: nn.Module, distiller: "Distiller | None") -> None:
    """RT-DETRv4's projector learns only from the foundation teacher. Without one nothing reaches it,
    and DDP stops on parameters that get no gradient: frozen here (deploy drops it anyway)."""
    owner = feature_projector_owner(model)
    if owner is None or (distiller is not None and distiller.foundation is not None):
        return
    owner.feature_projector.requires_grad_(False)
    if dist.is_main():
        print("note: no foundation teacher (distill.foundation), so the encoder's distillation projector "
              "(feature_projector) is frozen and loss_distill stays 0")


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
    auxiliary layer, suffixed _aux_i; with proposals, of the first layer's head, _pre, and of the
    encoder's proposals, _enc_i) against the teacher's final predictions; matching per image."""
    teacher = {k: v.detach().float() for k, v in teacher.items() if v is not None}
    layers = [("", outputs)]
    if spec.get("layers", "final") == "all":
        layers = [(f"_aux_{i}", layer) for i, layer in enumerate(outputs.get("aux_outputs") or [])] + layers
    layer_weights = spec.get("layer_weights") or [1.0] * len(layers)
    if len(layer_weights) != len(layers):
        raise ConfigError(f"layer_weights has {len(layer_weights)} entries for {len(layers)} student layers",
                          where="distill.logit.layer_weights", hint="one per layer, first auxiliary layer to final")
    if spec.get("proposals"):
        extra = [("_pre", outputs["pre_outputs"])] if outputs.get("pre_outputs") else []
        extra += [(f"_enc_{i}", layer) for i, layer in enumerate(outputs.get("enc_aux_outputs") or [])]
        layers, layer_weights = extra + layers, [1.0] * len(extra) + list(layer_weights)
    terms = {}
    for (suffix, layer), layer_weight in zip(layers, layer_weights):
        student = {k: layer[k].float() for k in ("pred_logits", "pred_boxes", "pred_corners", "ref_points")
                   if layer.get(k) is not None}
        if "pred_corners" in student:  # the frame its edge distributions are measured in
            student.update(up=outputs["up"], reg_scale=outputs["reg_scale"])
            student["bins"] = edge_bins(student)
        target = teacher
        if student["pred_logits"].shape[-1] == 1 < teacher["pred_logits"].shape[-1]:
            # class-agnostic proposals learn the teacher's best class score
            target = {**teacher, "pred_logits": teacher["pred_logits"].max(-1, keepdim=True).values}
        indices = [match_queries(student["pred_logits"][b].detach(), student["pred_boxes"][b].detach(),
                                 target["pred_logits"][b], target["pred_boxes"][b], spec.get("matching", "hungarian"),
                                 spec.get("cost_class", 2.0), spec.get("cost_bbox", 5.0), spec.get("cost_giou", 2.0),
                                 spec.get("weighted_matching", True))
                   for b in range(student["pred_logits"].shape[0])]
        values = logit_losses(student, target, indices, spec.get("temperature", 1.0), spec.get("ld_temperature", 5.0),
                              spec.get("cls_gamma", 2.0))
        for name, value in values.items():
            terms[f"loss_kd_{name}{suffix}"] = value * weights[name] * layer_weight
    return terms


PER_QUERY = ("pred_logits", "pred_boxes", "pred_corners", "ref_points")


def denoising_terms(outputs: dict, teacher_dn: dict, spec: dict, weights: dict) -> dict[str, torch.Tensor]:
    """Logit terms of the student's denoising queries (each decoder layer's with layers: all, the first
    layer's head's with proposals; suffixed _dn_i, _dn_pre) against the teacher's final answers to the
    same queries, query by query: every real box's positive and negative copies (padding left out)."""
    meta = outputs["dn_meta"]
    group = meta["dn_num_split"][0] // meta["dn_num_group"]   # [positives | negatives] of max_gt each
    batch = torch.cat([torch.full_like(idx, b) for b, idx in enumerate(meta["dn_positive_idx"])])
    real = torch.cat(meta["dn_positive_idx"])
    batch, real = torch.cat([batch, batch]), torch.cat([real, real + group // 2])

    def packed(layer: dict) -> dict:  # the real queries of every image as one image's, in the same order
        return {k: (v[batch, real][None] if k in PER_QUERY else v) for k, v in layer.items() if v is not None}

    indices = [(torch.arange(len(real), device=real.device),) * 2]
    layers = list(enumerate(outputs["dn_outputs"]))
    layer_weights = spec.get("layer_weights") or [1.0] * len(layers)
    if spec.get("layers", "final") != "all":
        layers, layer_weights = layers[-1:], [1.0]
    named = [(f"_dn_{i}", layer, w) for (i, layer), w in zip(layers, layer_weights)]
    if spec.get("proposals") and outputs.get("dn_pre_outputs") is not None:
        named.insert(0, ("_dn_pre", outputs["dn_pre_outputs"], 1.0))
    teacher = packed({k: v.detach().float() for k, v in teacher_dn.items() if v is not None})
    terms = {}
    for suffix, layer, layer_weight in named:
        student = packed({k: layer[k].float() for k in PER_QUERY if layer.get(k) is not None})
        if "pred_corners" in student and "pred_corners" in teacher:
            student.update(up=outputs["up"], reg_scale=outputs["reg_scale"])
            student["bins"] = edge_bins(student)
        values = logit_losses(student, teacher, indices, spec.get("temperature", 1.0), spec.get("ld_temperature", 5.0),
                              spec.get("cls_gamma", 2.0))
        for name, value in values.items():
            terms[f"loss_kd_{name}{suffix}"] = value * weights[name] * layer_weight
    return terms


class KDModules(nn.Module):
    """What distillation trains besides the student: feature adapters (+ MGD generators)."""

    def __init__(self):
        super().__init__()
        self.pairs = nn.ModuleList()


# ------------------------------------------------------------------------------ the component
class Distiller:
    """Everything distillation adds to a training run, held by the Solver.

    prepare(images, outputs)  runs the frozen teacher(s) on the batch (before the criterion); the
                              foundation teacher's map goes into the outputs for the criterion
    losses(outputs, epoch)    the weighted detector-teacher terms of this step
    after_backward(model)     averages the adapters' gradients over processes; measures the gradient share
    end_epoch(epoch, stage2)  the epoch's figures (factor; the adapted loss_distill weight)
    param_groups()            the trainable adapters for the optimizer
    state_dict()/load_state_dict()  what a checkpoint keeps (never the teacher)"""

    def __init__(self, spec: dict, student: nn.Module, imgsz, device, epochs: int, teacher_cfg: dict | None = None,
                 teacher_weights: str | None = None, criterion: nn.Module | None = None,
                 student_names: list[str] | None = None):
        self.spec, self.device, self.imgsz = spec, device, tuple(imgsz)
        self.kind = spec["kd_loss_type"]
        self.window = epoch_window(spec["epoch_window"], epochs)
        self.kd = KDModules().to(device)
        self.student_taps: dict[int, object] = {}
        self.teacher_corners: dict[str, torch.Tensor] = {}
        self.teacher = None
        self.teacher_out, self.teacher_taps = None, {}
        if self.kind != "none":
            if not (teacher_cfg and teacher_weights):
                raise ConfigError(f"kd_loss_type {self.kind} needs a teacher", where="-tc/-tw",
                                  hint="pass -tc TEACHER_CONFIG -tw TEACHER_WEIGHTS (distill.py)")
            self.teacher, teacher_names = build_teacher(teacher_cfg, teacher_weights, device)
            core = decoder_core(self.teacher)
            if core is not None:  # the final layer's edge distributions and the reference boxes they refer to
                core.register_forward_hook(lambda m, i, out: self.teacher_corners.update(
                    pred_corners=out[2][-1], ref_points=out[3][-1]))
        self.use_logit = self.kind in ("logit", "all")
        self.use_feature = self.kind in ("feature", "all")
        if self.use_logit:
            self._set_up_logit(student, spec["logit"])
            check_same_classes(student_names, teacher_names, teacher_weights)
        self.pair_specs = self._set_up_features(student, spec["feature"]) if self.use_feature else []
        self.criterion = criterion
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
        if spec["denoising"]:
            for side, model in (("student", student), ("teacher", self.teacher)):
                if getattr(model.layers[-1], "num_denoising", 0) <= 0:
                    raise ConfigError(f"distill.logit.denoising needs denoising queries, and the {side}'s decoder "
                                      f"has none", where=f"{where}.denoising",
                                      hint=f"give the {side}'s decoder num_denoising > 0, or set denoising: false")
        if self.logit_weights["ld"] > 0 and not self.use_ld and dist.is_main():
            side = "student" if s_core is None else "teacher"
            print(f"note: corner distillation (distill.logit.weights.ld) is off: the {side}'s decoder has no "
                  f"D-FINE corner distributions; the other logit terms still apply")

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
        """RT-DETRv4: the teacher's tokens supervise the graph's own projector through the criterion's
        `distill` term; the AIFI layers beside the projector are where the gradient share is measured."""
        where = "distill.foundation"
        criterion = self.criterion
        if criterion is None or "distill" not in criterion.losses or "loss_distill" not in criterion.weight_dict:
            raise ConfigError("the foundation teacher needs the criterion's `distill` term and its loss_distill weight",
                              where="criterion", hint="include configs/recipes/rtdetrv4.yml (RTv4Criterion with "
                                                      "losses [..., distill] and weight_dict.loss_distill)")
        owner = feature_projector_owner(student)
        teacher = ViTTeacher(spec["model"], spec["weights"], spec["model_kwargs"], spec["pool"], spec["mean"], spec["std"])
        if owner is None:
            raise ConfigError("the foundation teacher teaches the graph's distillation projector, and this graph has "
                              "none", where=where, hint=f"give the graph's HybridEncoder row distill_teacher_dim: "
                                                        f"{teacher.width} (as graphs/rtdetrv4/*.yaml)")
        width = owner.feature_projector[-1].out_features
        if width != teacher.width:
            raise ConfigError(f"the graph projects to {width} channels but the teacher {spec['model']} gives "
                              f"{teacher.width}", where=where,
                              hint=f"set the HybridEncoder row's distill_teacher_dim to {teacher.width}")
        adaptive = getattr(criterion, "distill_adaptive_params", None)
        return {"teacher": teacher.to(self.device), "adaptive": adaptive if adaptive and adaptive["enabled"] else None,
                # the official share: the encoder's transformer layers (RT-DETRv4's `encoder.encoder`)
                "shared": {id(p) for p in owner.encoder.parameters()}}

    def attach(self, student: nn.Module) -> None:
        """Forward hooks that keep the tapped rows' training outputs (with their gradient); attached
        after the EMA copy, so the EMA model carries none, and outside DDP's forward."""
        def keep(row):
            def hook(module, inputs, output):
                if module.training:
                    self.student_taps[row] = output
            return hook

        for row in sorted({s["student"][0] for s in self.pair_specs}):
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
        """Run the teachers on this batch: the detector teacher while its window is open (under the
        run's autocast), the foundation teacher every step in fp32 (as the official trainer)."""
        self.teacher_out, self.teacher_taps = None, {}
        if self.teacher is not None and self.factor(epoch) > 0:
            meta = outputs.get("dn_meta")
            replay = self.use_logit and self.logit_spec["denoising"] and meta is not None and meta["dn_num_group"] > 0
            with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp), \
                    replay_denoising(self.teacher.layers[-1], meta if replay else None):
                self.teacher.eval()
                self.teacher_out, self.teacher_taps = self.teacher.run(
                    images, taps={s["teacher"][0] for s in self.pair_specs})
        if self.foundation is not None:
            with torch.autocast(self.device.type, enabled=False):
                outputs = {**outputs, "teacher_encoder_output": self.foundation["teacher"](images)}
        return outputs

    def losses(self, outputs: dict, epoch: int) -> dict:
        factor = self.factor(epoch)
        taps, self.student_taps = self.student_taps, {}
        if factor == 0 or self.teacher is None:
            return {}
        losses = {}
        if self.use_logit:
            losses.update(self._logit_terms(outputs, self.teacher_out))
        for i, (s, pair) in enumerate(zip(self.pair_specs, self.kd.pairs)):
            student = pick(taps[s["student"][0]], s["student"], "distill.feature").float()
            teacher = pick(self.teacher_taps[s["teacher"][0]], s["teacher"], "distill.feature").float()
            losses[f"loss_kd_{s['loss']}_{i}"] = pair(student, teacher) * s["weight"]
        return {name: value * factor for name, value in losses.items()}

    def _logit_terms(self, outputs: dict, teacher_out: dict) -> dict:
        teacher = {"pred_logits": teacher_out["pred_logits"], "pred_boxes": teacher_out["pred_boxes"]}
        teacher_dn = (teacher_out.get("dn_outputs") or [None])[-1]
        head = self.teacher.layers[-1]
        if self.use_ld and self.teacher_corners:
            queries = teacher["pred_logits"].shape[1]  # the matching queries come after any denoising ones
            teacher.update({k: v[:, -queries:] for k, v in self.teacher_corners.items()}, up=head.up,
                           reg_scale=head.reg_scale)
            teacher["bins"] = edge_bins(teacher)
            self.teacher_corners.clear()
            if teacher_dn is not None:
                teacher_dn = {**teacher_dn, "up": head.up, "reg_scale": head.reg_scale, "bins": teacher["bins"]}
        elif not self.use_ld:
            outputs = {**outputs, "pred_corners": None, **{key: [{**layer, "pred_corners": None} for layer in
                                                                 outputs.get(key) or []]
                                                           for key in ("aux_outputs", "dn_outputs") if key in outputs}}
            if teacher_dn is not None:
                teacher_dn = {**teacher_dn, "pred_corners": None}
        terms = logit_terms(outputs, teacher, self.logit_spec, self.logit_weights)
        if teacher_dn is not None:
            terms.update(denoising_terms(outputs, teacher_dn, self.logit_spec, self.logit_weights))
        return terms

    def after_backward(self, student: nn.Module, epoch: int) -> None:
        if dist.enabled():  # the adapters live outside the DDP model: average their gradients here
            for p in self.kd.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= dist.world_size()
        f = self.foundation
        if f is not None and f["adaptive"] is not None:
            # RT-DETRv4's share: L1 of the encoder transformer's gradients over all the student's (in %)
            params = [p for p in student.parameters() if p.grad is not None]
            norms = torch.stack([p.grad.detach().abs().sum() for p in params]) if params else torch.zeros(1)
            shared = torch.tensor([id(p) in f["shared"] for p in params] or [False], device=norms.device)
            total = norms.sum().item()
            self.shares.append(100.0 * norms[shared].sum().item() / total if 0 < total < math.inf else 0.0)

    @staticmethod
    def term_names(loss_terms: dict) -> list[str]:
        """The distillation terms among a step's loss terms (shown in the progress bar and logged)."""
        return [k for k in loss_terms if k.startswith("loss_kd_") or k == "loss_distill"]

    def end_epoch(self, epoch: int, stage2: bool) -> dict:
        figures = {"kd_factor": self.factor(epoch)}
        f = self.foundation
        if f is not None:
            weights = self.criterion.weight_dict
            if f["adaptive"] is not None:
                a = f["adaptive"]
                mean = sum(self.shares) / len(self.shares) if self.shares else 0.0
                share = dist.all_reduce_mean({"share": mean})["share"]
                figures["distill_grad_share"] = share
                weights["loss_distill"] = adapted_weight(weights["loss_distill"], share, a["rho"], a["delta"],
                                                         a["default_weight"], stage2)
            self.shares = []
            figures["distill_weight"] = weights["loss_distill"]
        return figures

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"modules": self.kd.state_dict(),
                "loss_distill": self.criterion.weight_dict["loss_distill"] if self.foundation else None}

    def load_state_dict(self, saved: dict | None, path, resuming: bool, restart: bool = False) -> None:
        """Adapters from a checkpoint; `resuming` (-r) also restores the adapted loss_distill weight,
        which a stage-2 restart from best_stg1 (`restart`) keeps as it is, as the official trainer."""
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
        if self.foundation is not None and resuming and not restart and saved.get("loss_distill") is not None:
            self.criterion.weight_dict["loss_distill"] = float(saved["loss_distill"])
