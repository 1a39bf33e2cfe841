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

Logit terms (per image: student queries matched to teacher queries, never across images):
  cls   BCE of student logits / T against the teacher's sigmoid(logits / T), times T^2; student
        queries left unmatched learn background (all-zero targets). Mean over student queries.
  bbox  L1 (sum over cxcywh) and giou (1 - GIoU) of matched boxes, weighted by the teacher's
        confidence (its highest class probability) and normalised by the weights' sum.
  ld    localisation distillation on D-FINE edge distributions: per edge KL(teacher || student)
        of softmax(corners / T), times T^2, weighted like the boxes (LD: Localization Distillation.
        CVPR 2022. https://arxiv.org/abs/2102.12252).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

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
                  cost_bbox: float = 5.0, cost_giou: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """ONE image's matching: (student query indices, teacher query indices).

    hungarian: one-to-one on cost_class * mean |p_s - p_t| + cost_bbox * L1(cxcywh) - cost_giou * GIoU;
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
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    device = s_logits.device
    return torch.as_tensor(rows, dtype=torch.int64, device=device), torch.as_tensor(cols, dtype=torch.int64, device=device)


def logit_losses(student: dict, teacher: dict, indices: list[tuple[torch.Tensor, torch.Tensor]],
                 temperature: float = 1.0, ld_temperature: float = 5.0) -> dict[str, torch.Tensor]:
    """cls / bbox / giou (and ld when both carry `pred_corners` of the same bins) for one decoder layer.

    student/teacher: {'pred_logits' [B,Q,C], 'pred_boxes' [B,Q,4], optional 'pred_corners' [B,Q,4*bins]};
    indices: per image (student rows, teacher rows) from `match_queries`."""
    s_logits, t_logits = student["pred_logits"], teacher["pred_logits"].detach()
    batch = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(indices)])
    s_idx = torch.cat([rows for rows, _ in indices])
    t_idx = torch.cat([cols for _, cols in indices])

    soft = torch.zeros_like(s_logits)
    soft[batch, s_idx] = torch.sigmoid(t_logits[batch, t_idx] / temperature).to(soft.dtype)
    cls = F.binary_cross_entropy_with_logits(s_logits / temperature, soft, reduction="none").sum(-1).mean()
    terms = {"cls": cls * temperature ** 2}

    weight = t_logits[batch, t_idx].sigmoid().max(dim=-1).values
    norm = weight.sum().clamp(min=1e-6)
    s_boxes, t_boxes = student["pred_boxes"][batch, s_idx], teacher["pred_boxes"].detach()[batch, t_idx]
    terms["bbox"] = (weight * (s_boxes - t_boxes).abs().sum(-1)).sum() / norm
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(s_boxes), box_cxcywh_to_xyxy(t_boxes)))
    terms["giou"] = (weight * (1 - giou)).sum() / norm

    s_corners, t_corners = student.get("pred_corners"), teacher.get("pred_corners")
    if s_corners is not None and t_corners is not None and s_corners.shape[-1] == t_corners.shape[-1]:
        bins = s_corners.shape[-1] // 4
        s_edges = s_corners[batch, s_idx].reshape(-1, 4, bins) / ld_temperature
        t_edges = t_corners.detach()[batch, t_idx].reshape(-1, 4, bins) / ld_temperature
        kl = (F.softmax(t_edges, -1) * (F.log_softmax(t_edges, -1) - F.log_softmax(s_edges, -1))).sum(-1).mean(-1)
        terms["ld"] = (weight * kl).sum() / norm * ld_temperature ** 2
    return terms
