"""Knowledge-distillation losses between two detectors: feature terms on [B, C, H, W] maps and logit
terms on matched DETR queries.

Feature terms (the teacher map is detached and already aligned to the student's shape):
  mimic  FitNets-style mimicking: mean squared error.
  cwd    CWD: Channel-wise Knowledge Distillation for Dense Prediction. ICCV 2021.
         https://arxiv.org/abs/2011.13256 ; per channel a softmax over locations (temperature tau),
         KL(teacher || student) averaged over B*C, times tau^2.
  mgd    MGD: Masked Generative Distillation. ECCV 2022. https://arxiv.org/abs/2205.01529 ; a random
         fraction lambda of the student's locations is zeroed, a 3x3-conv block regenerates the
         teacher map; loss = alpha * squared error summed over C*H*W, averaged over B.
  ickd   ICKD: Exploring Inter-Channel Correlation for Diversity-preserved Knowledge Distillation.
         ICCV 2021. https://arxiv.org/abs/2202.03680 ; per image the C x C channel Gram matrix,
         rows L2-normalised; squared difference summed, divided by B*C.
  sp     SP: Similarity-Preserving Knowledge Distillation. ICCV 2019. https://arxiv.org/abs/1907.09682 ;
         the B x B Gram matrix of flattened maps, rows L2-normalised; squared Frobenius difference / B^2.

Logit terms (per image: student queries matched to teacher queries, never across images), each
normalised by the teacher's confidence (its highest class probability) summed over the matched
queries, at least 1:
  cls   BCE of student logits / T against the teacher's sigmoid(logits / T), times T^2, modulated as
        quality focal loss by |sigmoid(s / T) - sigmoid(t / T)|^gamma (GFL: Generalized Focal Loss.
        NeurIPS 2020. https://arxiv.org/abs/2006.04388; gamma 0: plain BCE); student queries left
        unmatched learn background (all-zero targets).
  bbox  L1 (sum over cxcywh) and giou (1 - GIoU) of matched boxes, weighted by that confidence.
  ld    localisation distillation on D-FINE edge distributions (LD: Localization Distillation.
        CVPR 2022. https://arxiv.org/abs/2102.12252): per edge KL(teacher || student) of
        softmax(corners / T), times T^2, weighted like the boxes. A D-FINE distribution places an
        edge relative to its query's own reference box (in bins W(n) of that box's size), so two
        decoders' distributions are compared only after the teacher's is moved into the student's
        frame: each teacher bin's absolute edge position is split between the two student bins
        around it (as D-FINE's FGL splits a ground-truth edge). The move is of the distribution the
        box is decoded from (T = 1), softened after it (p^(1/T), renormalised): a student that matches
        the target decodes the teacher's edges. With the same frame and bins this is the plain KL.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from blocks.decoder._dfine_parts import weighting_function
from core.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

FEATURE_LOSSES = ("mimic", "cwd", "mgd", "ickd", "sp")
MATCHING = ("hungarian", "iou", "index")


# ------------------------------------------------------------------------------ feature terms
def mimic_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def cwd_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    s = student.flatten(2) / tau
    t = teacher.flatten(2) / tau
    kl = (F.softmax(t, dim=-1) * (F.log_softmax(t, dim=-1) - F.log_softmax(s, dim=-1))).sum(-1)
    return kl.mean() * tau ** 2


def ickd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    def gram(x):
        x = x.flatten(2)
        return F.normalize(torch.bmm(x, x.transpose(1, 2)), dim=2)

    batch, channels = student.shape[:2]
    return (gram(student) - gram(teacher)).pow(2).sum() / (batch * channels)


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    def gram(x):
        x = x.flatten(1)
        return F.normalize(x @ x.t(), dim=1)

    batch = student.shape[0]
    return (gram(student) - gram(teacher)).pow(2).sum() / batch ** 2


class MGDGenerator(nn.Module):
    """MGD's generation block: conv3x3 -> ReLU -> conv3x3 at the teacher's width."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def mgd_loss(student: torch.Tensor, teacher: torch.Tensor, generator: nn.Module, alpha: float = 2e-5,
             lam: float = 0.65, keep: torch.Tensor | None = None) -> torch.Tensor:
    """`keep` [B, 1, H, W] of 0/1 (1 = kept); drawn with P(drop) = lam when not given."""
    if keep is None:
        keep = (torch.rand(student.shape[0], 1, *student.shape[2:], device=student.device) <= 1 - lam)
    generated = generator(student * keep.to(student.dtype))
    return alpha * (generated - teacher).pow(2).sum() / student.shape[0]


def make_adapter(c_in: int, c_out: int, norm: bool = True) -> nn.Module:
    """1x1 conv (+ BN) from the student's width to the teacher's."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=not norm)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out)) if norm else conv


def align_spatial(teacher: torch.Tensor, size) -> torch.Tensor:
    if tuple(teacher.shape[-2:]) == tuple(size):
        return teacher
    return F.interpolate(teacher, size=tuple(size), mode="bilinear", align_corners=False)


class FeaturePair(nn.Module):
    """One (student row -> teacher row) term: adapter, spatial alignment and the chosen loss."""

    def __init__(self, loss: str, c_student: int, c_teacher: int, adapter: str = "auto", norm: bool = True,
                 tau: float = 1.0, alpha: float = 2e-5, lam: float = 0.65):
        super().__init__()
        self.loss, self.tau, self.alpha, self.lam = loss, tau, alpha, lam
        # SP compares images with images (B x B), so it works across widths without an adapter
        needs = loss != "sp" and (adapter == "always" or (adapter == "auto" and c_student != c_teacher))
        self.adapter = make_adapter(c_student, c_teacher, norm) if needs else nn.Identity()
        self.generator = MGDGenerator(c_teacher) if loss == "mgd" else None

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor | None = None):
        student = self.adapter(student)
        teacher = align_spatial(teacher.to(student.dtype), student.shape[-2:])
        if self.loss == "mimic":
            return mimic_loss(student, teacher)
        if self.loss == "cwd":
            return cwd_loss(student, teacher, self.tau)
        if self.loss == "mgd":
            return mgd_loss(student, teacher, self.generator, self.alpha, self.lam, keep)
        if self.loss == "ickd":
            return ickd_loss(student, teacher)
        return sp_loss(student, teacher)


# -------------------------------------------------------------------------------- logit terms
@torch.no_grad()
def match_queries(s_logits, s_boxes, t_logits, t_boxes, method: str = "hungarian", cost_class: float = 2.0,
                  cost_bbox: float = 5.0, cost_giou: float = 2.0,
                  weighted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """ONE image's matching: (student query indices, teacher query indices).

    hungarian: one-to-one on cost_class * mean |p_s - p_t| + cost_bbox * L1(cxcywh) - cost_giou * GIoU;
         `weighted`: each teacher query's costs times its confidence w (highest class probability),
         shifted first so that every cost is at most 0 (w * (cost - max cost)): the assignment minimises
         the confidence-weighted cost, as the losses weigh the pairs, so a confident teacher query gets
         the student query nearest to it rather than whatever the many background queries leave over
         (with fewer student queries, matching a confident teacher query mostly pays more);
    iou: every student query takes the teacher query of highest GIoU with its box (many-to-one;
         GIoU also ranks boxes that do not overlap);
    index: query i to query i (needs equal query counts)."""
    if method == "index":
        count = min(s_logits.shape[0], t_logits.shape[0])
        index = torch.arange(count, device=s_logits.device)
        return index, index
    giou = generalized_box_iou(box_cxcywh_to_xyxy(s_boxes.float()), box_cxcywh_to_xyxy(t_boxes.float()))
    if method == "iou":
        return torch.arange(s_boxes.shape[0], device=s_boxes.device), giou.argmax(dim=1)
    prob_cost = torch.cdist(s_logits.float().sigmoid(), t_logits.float().sigmoid(), p=1) / s_logits.shape[-1]
    cost = cost_class * prob_cost + cost_bbox * torch.cdist(s_boxes.float(), t_boxes.float(), p=1) - cost_giou * giou
    if weighted:
        cost = (cost - cost.max()) * t_logits.float().sigmoid().max(dim=-1).values[None, :]
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    device = s_logits.device
    return torch.as_tensor(rows, dtype=torch.int64, device=device), torch.as_tensor(cols, dtype=torch.int64, device=device)


def logit_losses(student: dict, teacher: dict, indices: list[tuple[torch.Tensor, torch.Tensor]],
                 temperature: float = 1.0, ld_temperature: float = 5.0, cls_gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """cls / bbox / giou (and ld when both carry `pred_corners` of the same bins) for one decoder layer.

    student/teacher: {'pred_logits' [B,Q,C], 'pred_boxes' [B,Q,4], optional 'pred_corners' [B,Q,4*bins]};
    indices: per image (student rows, teacher rows) from `match_queries`."""
    s_logits, t_logits = student["pred_logits"], teacher["pred_logits"].detach()
    batch = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(indices)])
    s_idx = torch.cat([rows for rows, _ in indices])
    t_idx = torch.cat([cols for _, cols in indices])

    # every term is normalised by the teacher's confidence summed over the matched queries (about its
    # number of objects), as the ground-truth loss is by the number of boxes
    weight = t_logits[batch, t_idx].sigmoid().max(dim=-1).values
    norm = weight.sum().clamp(min=1.0)
    soft = torch.zeros_like(s_logits)
    soft[batch, s_idx] = torch.sigmoid(t_logits[batch, t_idx] / temperature).to(soft.dtype)
    cls = F.binary_cross_entropy_with_logits(s_logits / temperature, soft, reduction="none")
    # quality focal (GFL): the many scores the student already matches, mostly background, count little
    cls = cls * (torch.sigmoid(s_logits / temperature) - soft).abs().pow(cls_gamma)
    terms = {"cls": cls.sum() / norm * temperature ** 2}

    s_boxes, t_boxes = student["pred_boxes"][batch, s_idx], teacher["pred_boxes"].detach()[batch, t_idx]
    terms["bbox"] = (weight * (s_boxes - t_boxes).abs().sum(-1)).sum() / norm
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(s_boxes), box_cxcywh_to_xyxy(t_boxes)))
    terms["giou"] = (weight * (1 - giou)).sum() / norm

    if student.get("pred_corners") is not None and teacher.get("pred_corners") is not None:
        s_corners = student["pred_corners"][batch, s_idx]
        s_edges = s_corners.reshape(s_corners.shape[0], 4, -1) / ld_temperature
        t_corners = teacher["pred_corners"].detach()[batch, t_idx]
        # the distribution the teacher's box is decoded from (T = 1) is what moves; softened after the move,
        # the student's T = 1 distribution at the optimum is the moved one: it decodes the teacher's box
        moved, inside = moved_edges(F.softmax(t_corners.reshape(t_corners.shape[0], 4, -1), -1),
                                    teacher["ref_points"].detach()[batch, t_idx], teacher["bins"],
                                    teacher["reg_scale"], student["ref_points"].detach()[batch, s_idx],
                                    student["bins"], student["reg_scale"], inside=True)
        target = moved.double().pow(1 / ld_temperature)
        target = (target / target.sum(-1, keepdim=True)).to(s_edges.dtype)
        kl = (target * (target.clamp(min=1e-12).log() - F.log_softmax(s_edges, -1))).sum(-1)
        # an edge beyond the student's reach piles on an end bin, which is not the teacher's edge: each
        # edge counts by the share of the teacher's mass the student's bins can hold
        kl = (kl * inside).mean(-1)
        terms["ld"] = (weight * kl).sum() / norm * ld_temperature ** 2
    return terms


def edge_bins(decoder_outputs: dict) -> torch.Tensor:
    """W(n) of a D-FINE head from its outputs' `up` and `reg_scale` (reg_max from the corners' width)."""
    reg_max = decoder_outputs["pred_corners"].shape[-1] // 4 - 1
    return weighting_function(reg_max, decoder_outputs["up"], decoder_outputs["reg_scale"]).detach()


@torch.no_grad()
def moved_edges(prob: torch.Tensor, refs: torch.Tensor, bins: torch.Tensor, reg_scale, to_refs: torch.Tensor,
                to_bins: torch.Tensor, to_reg_scale, inside: bool = False):
    """Edge distributions [N, 4, len(bins)] over offsets from `refs` (cxcywh) re-expressed over the
    bins of `to_refs` -> [N, 4, len(to_bins)]: every bin's mass goes to the two target bins around its
    absolute edge position, split linearly in W (all of it to an end bin beyond the ends).
    `inside`: also the share of each edge's mass that lay within the target bins' range [N, 4]."""
    def positions(ref, values, scale):   # absolute left, top, right, bottom of every bin: [N, 4, bins]
        scale = scale.abs()
        reach = 0.5 * scale + values[None, :]
        w, h = ref[:, 2:3] / scale, ref[:, 3:4] / scale
        return torch.stack([ref[:, 0:1] - reach * w, ref[:, 1:2] - reach * h,
                            ref[:, 0:1] + reach * w, ref[:, 1:2] + reach * h], 1)

    # float64: a split share that should be 0 must stay ~1e-16 (the loss softens the result, x^(1/T))
    edges = positions(refs.double(), bins.double(), reg_scale.double())
    scale, to_refs = to_reg_scale.double().abs(), to_refs.double()
    w, h = (to_refs[:, 2:3] / scale)[:, :, None], (to_refs[:, 3:4] / scale)[:, :, None]
    cx, cy = to_refs[:, 0:1, None], to_refs[:, 1:2, None]
    offsets = torch.cat([(cx - edges[:, 0:1]) / w, (cy - edges[:, 1:2]) / h, (edges[:, 2:3] - cx) / w,
                         (edges[:, 3:4] - cy) / h], 1) - 0.5 * scale
    to_bins = to_bins.double()
    left = (torch.searchsorted(to_bins, offsets.contiguous(), right=True) - 1).clamp(0, len(to_bins) - 2)
    lo, hi = to_bins[left], to_bins[left + 1]
    right_share = ((offsets - lo) / (hi - lo)).clamp(0, 1).to(prob.dtype)
    moved = torch.zeros(*prob.shape[:2], len(to_bins), dtype=prob.dtype, device=prob.device)
    moved.scatter_add_(-1, left, prob * (1 - right_share))
    moved.scatter_add_(-1, left + 1, prob * right_share)
    if not inside:
        return moved
    within = (offsets >= to_bins[0]) & (offsets <= to_bins[-1])
    return moved, (prob * within.to(prob.dtype)).sum(-1)
