"""The DETR-family set criterion shared by D-FINE, DEIM, DEIMv2, RT-DETRv2 and RT-DETRv4.

Per decoder output (the final layer, `aux_outputs`, `pre_outputs`, `enc_aux_outputs`, the
denoising `dn_outputs` and `dn_pre_outputs`) it matches predictions to targets and sums the
requested terms, each multiplied by its `weight_dict` entry and suffixed by where it came from
(`_aux_i`, `_pre`, `_enc_i`, `_dn_i`, `_dn_pre`). Term names in `losses`:

  focal / vfl / mal   classification (loss_focal / loss_vfl / loss_mal), on each layer's own matching
  boxes               loss_bbox (L1) and loss_giou on normalised cxcywh boxes
  local               loss_fgl and loss_ddf on the edge distributions (D-FINE decoders only)
  distill             loss_distill, RT-DETRv4's cosine term on encoder features

With `use_uni_set` the box and local terms of every layer use the union of all layers'
matchings (D-FINE's "GO" set), normalised by its size; otherwise each layer uses its own.
Normalisers are averaged over DDP ranks when torch.distributed is initialised.

Work done once per forward, not per layer: the targets are concatenated once, each matching's
index pairs and matched targets are gathered once (the union set and the denoising matching serve
up to a dozen layers each), and the loss waits for the device only where the official semantics
need a value on the host: the Hungarian solver (scipy) and DDF's "is this layer its own teacher"
(`torch.equal`, skipped when the two are one tensor). Normalisers stay tensors (no `.item()`) and
DDF's masked means need no `.any()`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from core.box_ops import box_cxcywh_to_xyxy
from models.criterion.box_losses import (decoupled_distillation_loss, edge_offset_targets,
                                         fine_grained_localization_loss, l1_and_giou_losses, matched_giou,
                                         matched_iou)
from models.criterion.classification import matchability_aware_loss, sigmoid_focal_loss, varifocal_loss
from models.criterion.feature_distill import cosine_distillation_loss
from models.criterion.matcher import Indices, check_weights, denoising_indices, union_indices
from models.criterion.targets import check_targets
from core.errors import ConfigError

CLASS_TERMS = ("focal", "vfl", "mal")
# the terms computed densely over every query (fixed shapes per layer kind): what `compile_dense_terms` compiles
DENSE_TERMS = {"sigmoid_focal_loss": sigmoid_focal_loss, "varifocal_loss": varifocal_loss,
               "matchability_aware_loss": matchability_aware_loss,
               "decoupled_distillation_loss": decoupled_distillation_loss}
BOX_TERMS = ("boxes", "local")  # the terms that use the union set
TERMS = CLASS_TERMS + BOX_TERMS + ("distill",)
# the weight_dict keys the terms above produce; a key outside these weighs nothing (a typo)
LOSS_NAMES = ("loss_focal", "loss_vfl", "loss_mal", "loss_bbox", "loss_giou", "loss_fgl", "loss_ddf", "loss_distill")


def average_over_ranks(count: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """The per-rank mean of `count` across DDP ranks (plain when not distributed), at least 1, as a
    0-dim float tensor on `device` (dividing by it equals dividing by the float; no host round-trip)."""
    value = torch.as_tensor(count, dtype=torch.float, device=device).reshape(())
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
        world = dist.get_world_size()
    return torch.clamp(value / world, min=1)


@dataclass
class _Matched:
    """One matching, gathered once: flat (image, query) indices on the device and the matched
    targets' labels and boxes, in the matching's order."""
    batch_idx: torch.Tensor
    query_idx: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


@dataclass
class _ForwardState:
    """What one forward shares between layers, as D-FINE defines it."""
    labels: torch.Tensor                 # every target's label, image after image
    boxes: torch.Tensor                  # and box
    first: list[int]                     # the position of each image's first target in those
    up: torch.Tensor | None = None
    reg_scale: torch.Tensor | None = None
    matched: dict = field(default_factory=dict)  # id(indices) -> (indices, _Matched); indices kept alive
    # FGL bin targets are computed once per matching (the first layer that uses it) and reused
    edge_targets: dict = field(default_factory=dict)
    # DDF's matched / unmatched balance comes from the non-denoising layers; dn layers reuse it
    ddf_balance: tuple | None = None

    @classmethod
    def of(cls, targets: list[dict], device, **kwargs) -> "_ForwardState":
        counts = [len(t["labels"]) for t in targets]
        first = [sum(counts[:i]) for i in range(len(counts))]
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        boxes = torch.cat([t["boxes"] for t in targets]).to(device)
        return cls(labels=labels, boxes=boxes, first=first, **kwargs)

    def gather(self, indices: Indices) -> _Matched:
        """The matching's device indices and matched targets (computed on the first request)."""
        key = id(indices)
        if key not in self.matched:
            batch_idx = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(indices)])
            query_idx = torch.cat([rows for rows, _ in indices])
            target_idx = torch.cat([cols + first for (_, cols), first in zip(indices, self.first)])
            device = self.labels.device
            target_idx = target_idx.to(device)
            self.matched[key] = (indices, _Matched(batch_idx.to(device), query_idx.to(device),
                                                   self.labels[target_idx], self.boxes[target_idx]))
        return self.matched[key][1]


class DETRCriterion(nn.Module):
    # D-FINE reports loss_ddf = 0 on a layer that is its own teacher; DEIM leaves the term out
    zero_ddf_on_teacher = False

    def __init__(self, matcher: nn.Module, weight_dict: dict, losses: list[str], alpha: float = 0.2,
                 gamma: NonNegativeFloat = 2.0, num_classes: PositiveInt = 80, reg_max: PositiveInt = 32,
                 boxes_weight_format: str | None = None, share_matched_indices: bool = False,
                 mal_alpha: float | None = None, use_uni_set: bool = True, ddf_temperature: PositiveFloat = 5.0):
        super().__init__()
        unknown = [name for name in losses if name not in TERMS]
        if unknown:
            raise ConfigError(f"unknown loss terms {unknown}", where="criterion.losses",
                              hint=f"choose from {list(TERMS)}")
        # keys of terms not in `losses` may stay (a recipe's included weight_dict merges key by key)
        strays = [key for key in weight_dict if key not in LOSS_NAMES]
        if strays:
            raise ConfigError(f"weight_dict keys {strays} are no loss's name: they would weigh nothing",
                              where="criterion.weight_dict", hint=f"loss names: {', '.join(LOSS_NAMES)}")
        check_weights(weight_dict, "criterion.weight_dict")
        if boxes_weight_format not in (None, "iou", "giou"):
            raise ConfigError(f"boxes_weight_format {boxes_weight_format!r} is not one of None, 'iou', 'giou'",
                              where="criterion.boxes_weight_format")
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.losses = list(losses)
        self.alpha, self.gamma, self.mal_alpha = alpha, gamma, mal_alpha
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.boxes_weight_format = boxes_weight_format
        self.share_matched_indices = share_matched_indices
        self.use_uni_set = use_uni_set
        self.ddf_temperature = ddf_temperature
        self.dense = dict(DENSE_TERMS)

    def compile_dense_terms(self, **options) -> None:
        """torch.compile the dense terms (classification losses over all queries, DDF over all edges):
        element-wise chains that the compiler fuses into a few kernels. The matching, the gathers of
        matched pairs and the terms on them keep eager mode (their sizes change every step)."""
        self.dense = {name: torch.compile(function, **options) for name, function in DENSE_TERMS.items()}

    # ---------------------------------------------------------------- the forward pass
    def forward(self, outputs: dict, targets: list[dict], epoch: int = 0, **_) -> dict[str, torch.Tensor]:
        check_targets(targets, self.num_classes)
        device = outputs["pred_logits"].device

        def match(layer_outputs, layer_targets=targets):
            return self.matcher(layer_outputs, layer_targets, epoch=epoch)

        final = match(outputs)
        aux = list(outputs.get("aux_outputs") or [])
        pre = outputs.get("pre_outputs")
        enc = list(outputs.get("enc_aux_outputs") or [])
        class_agnostic_enc = bool(enc) and outputs.get("enc_meta", {}).get("class_agnostic", False)
        enc_targets = _agnostic_targets(targets) if class_agnostic_enc else targets

        aux_matches = [final if self.share_matched_indices else match(layer) for layer in aux]
        pre_match = match(pre) if pre is not None else None
        enc_matches = [match(layer, enc_targets) for layer in enc]

        num_boxes = average_over_ranks(sum(len(t["labels"]) for t in targets), device)
        union = None
        if self.use_uni_set:
            union = union_indices([final, *aux_matches, *([pre_match] if pre is not None else []), *enc_matches])
            union = (union, average_over_ranks(sum(len(rows) for rows, _ in union), device))

        def box_match(own: Indices) -> tuple:
            return union if union is not None else (own, num_boxes)

        state = _ForwardState.of(targets, device, up=outputs.get("up"), reg_scale=outputs.get("reg_scale"))
        agnostic_state = _ForwardState.of(enc_targets, device) if class_agnostic_enc else state
        losses: dict[str, torch.Tensor] = {}
        layers = [("", outputs, final), *((f"_aux_{i}", o, m) for i, (o, m) in enumerate(zip(aux, aux_matches)))]
        if pre is not None:
            layers.append(("_pre", pre, pre_match))
        for suffix, layer, own in layers:
            losses.update(self._layer_losses(layer, (own, num_boxes), box_match(own), state, suffix))

        # encoder proposals: no corners, so only the class and box terms
        for i, (layer, own) in enumerate(zip(enc, enc_matches)):
            num_classes = 1 if class_agnostic_enc else self.num_classes
            losses.update(self._layer_losses(layer, (own, num_boxes), box_match(own), agnostic_state,
                                             f"_enc_{i}", num_classes=num_classes))

        dn = outputs.get("dn_outputs", outputs.get("dn_aux_outputs"))
        if dn is not None and outputs.get("dn_meta") is not None:
            dn_meta = outputs["dn_meta"]
            dn_match = (denoising_indices(dn_meta, targets), torch.clamp(num_boxes * dn_meta["dn_num_group"], min=1))
            dn_layers = [(f"_dn_{i}", layer) for i, layer in enumerate(dn)]
            if outputs.get("dn_pre_outputs") is not None:
                dn_layers.append(("_dn_pre", outputs["dn_pre_outputs"]))
            for suffix, layer in dn_layers:
                losses.update(self._layer_losses(layer, dn_match, dn_match, state, suffix, is_dn=True))

        if "distill" in self.losses:
            losses["loss_distill"] = self._distill_loss(outputs) * self.weight_dict.get("loss_distill", 0.0)

        # a diverging batch (e.g. NaN boxes) contributes nothing instead of poisoning the step, as in DEIM
        return {name: torch.nan_to_num(value, nan=0.0) for name, value in losses.items()}

    def _layer_losses(self, layer: dict, class_match: tuple, box_match: tuple, state: _ForwardState, suffix: str,
                      num_classes: int | None = None, is_dn: bool = False) -> dict[str, torch.Tensor]:
        num_classes = self.num_classes if num_classes is None else num_classes
        terms: dict[str, torch.Tensor] = {}
        for name in self.losses:
            if name in CLASS_TERMS:
                terms.update(self._class_loss(name, layer, state.gather(class_match[0]), class_match[1], num_classes))
            elif name == "boxes":
                terms.update(self._box_losses(layer, state.gather(box_match[0]), box_match[1]))
            elif name == "local" and "pred_corners" in layer:
                terms.update(self._local_losses(layer, *box_match, state, is_dn))
        return {name + suffix: value * self.weight_dict[name] for name, value in terms.items()
                if name in self.weight_dict}

    # ---------------------------------------------------------------- the terms
    def _matched_weight(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor | None:
        """IoU or GIoU of the matched boxes when `boxes_weight_format` asks for it (detached)."""
        if self.boxes_weight_format is None:
            return None
        overlap = matched_iou if self.boxes_weight_format == "iou" else matched_giou
        return overlap(src_boxes.detach(), target_boxes)

    def _class_loss(self, name: str, layer: dict, matched: _Matched, num_boxes: torch.Tensor,
                    num_classes: int) -> dict[str, torch.Tensor]:
        logits = layer["pred_logits"]
        batch_idx, query_idx = matched.batch_idx, matched.query_idx
        classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
        classes[batch_idx, query_idx] = matched.labels.to(torch.int64)
        one_hot = F.one_hot(classes, num_classes + 1)[..., :-1].to(logits.dtype)
        if name == "focal":
            return {"loss_focal": self.dense["sigmoid_focal_loss"](logits, one_hot, self.alpha, self.gamma).sum()
                    / num_boxes}

        src_boxes = layer["pred_boxes"][batch_idx, query_idx]
        target_boxes = matched.boxes
        iou = self._matched_weight(src_boxes, target_boxes)
        if iou is None:
            iou = matched_iou(src_boxes, target_boxes).detach()
        score = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        score[batch_idx, query_idx] = iou.to(logits.dtype)
        score = score.unsqueeze(-1) * one_hot
        if name == "vfl":
            loss = self.dense["varifocal_loss"](logits, one_hot, score, self.alpha, self.gamma)
        else:
            loss = self.dense["matchability_aware_loss"](logits, one_hot, score, self.gamma, self.mal_alpha)
        return {f"loss_{name}": loss.sum() / num_boxes}

    def _box_losses(self, layer: dict, matched: _Matched, num_boxes: torch.Tensor):
        src_boxes = layer["pred_boxes"][matched.batch_idx, matched.query_idx]
        target_boxes = matched.boxes
        l1, giou = l1_and_giou_losses(src_boxes, target_boxes, num_boxes, self._matched_weight(src_boxes, target_boxes))
        return {"loss_bbox": l1, "loss_giou": giou}

    def _local_losses(self, layer: dict, indices: Indices, num_boxes: torch.Tensor,
                      state: _ForwardState, is_dn: bool) -> dict[str, torch.Tensor]:
        bins = self.reg_max + 1
        pairs = state.gather(indices)
        batch_idx, query_idx, target_boxes = pairs.batch_idx, pairs.query_idx, pairs.boxes
        key = (is_dn, id(indices))
        if key not in state.edge_targets:
            with torch.no_grad():
                state.edge_targets[key] = edge_offset_targets(
                    layer["ref_points"][batch_idx, query_idx].detach(), box_cxcywh_to_xyxy(target_boxes),
                    self.reg_max, state.reg_scale, state.up)
        target_bins, weight_right, weight_left = state.edge_targets[key]

        iou = matched_iou(layer["pred_boxes"][batch_idx, query_idx], target_boxes)
        edge_iou = iou.detach().repeat_interleave(4)
        pred_corners = layer["pred_corners"][batch_idx, query_idx].reshape(-1, bins)
        terms = {"loss_fgl": fine_grained_localization_loss(pred_corners, target_bins, weight_right, weight_left,
                                                            edge_iou, num_boxes)}

        if layer.get("teacher_corners") is None:
            return terms
        all_corners = layer["pred_corners"].reshape(-1, bins)
        teacher_corners = layer["teacher_corners"].reshape(-1, bins)
        if _same_tensor(layer["pred_corners"], layer["teacher_corners"]):  # the final layer is its own teacher
            if self.zero_ddf_on_teacher:
                terms["loss_ddf"] = all_corners.sum() * 0
            return terms
        # weight: the matched box's IoU for matched queries, the teacher's confidence for the rest
        weight = layer["teacher_logits"].sigmoid().max(dim=-1)[0]
        weight[batch_idx, query_idx] = iou.reshape(-1).to(weight.dtype)
        matched = torch.zeros_like(weight, dtype=torch.bool)
        matched[batch_idx, query_idx] = True
        weight = weight.detach().repeat_interleave(4, dim=-1).reshape(-1)
        matched = matched.repeat_interleave(4, dim=-1).reshape(-1)
        if not is_dn or state.ddf_balance is None:
            # per-GPU batch size should not change the balance: count as if 8 images
            batch_scale = 8 / layer["pred_boxes"].shape[0]
            state.ddf_balance = ((matched.sum() * batch_scale) ** 0.5, ((~matched).sum() * batch_scale) ** 0.5)
        terms["loss_ddf"] = self.dense["decoupled_distillation_loss"](all_corners, teacher_corners, weight, matched,
                                                        *state.ddf_balance, temperature=self.ddf_temperature)
        return terms

    def _distill_loss(self, outputs: dict) -> torch.Tensor:
        student, teacher = outputs.get("student_distill_output"), outputs.get("teacher_encoder_output")
        if student is None or teacher is None:
            return outputs["pred_logits"].new_zeros(())
        return cosine_distillation_loss(student, teacher)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a layer's distributions equal its teacher's, as the official criteria decide it
    (`torch.equal`). The decoder hands the final layer its own tensor as the teacher: that case is
    told from storage and layout on the host, so only distinct tensors are compared on the device."""
    if a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype:
        return True
    return torch.equal(a, b)


def _agnostic_targets(targets: list[dict]) -> list[dict]:
    agnostic = [copy.copy(t) for t in targets]
    for t in agnostic:
        t["labels"] = torch.zeros_like(t["labels"])
    return agnostic
