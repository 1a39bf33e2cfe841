"""Classification losses of the DETR family, element-wise over [B, Q, C] logits.

Each takes the logits and a one-hot target of the matched class (zeros for unmatched queries);
the IoU-aware ones also take `score`, the one-hot scaled by the matched box's IoU. The criterion
sums them and divides by the number of boxes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, one_hot: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al., ICCV 2017): BCE scaled by (1 - p_t)^gamma, classes weighted by alpha."""
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
    p_t = prob * one_hot + (1 - prob) * (1 - one_hot)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:  # a negative alpha switches class weighting off, as in torchvision
        loss = (alpha * one_hot + (1 - alpha) * (1 - one_hot)) * loss
    return loss


def varifocal_loss(logits: torch.Tensor, one_hot: torch.Tensor, score: torch.Tensor, alpha: float = 0.75,
                   gamma: float = 2.0) -> torch.Tensor:
    """Varifocal loss (VarifocalNet, CVPR 2021): BCE towards the IoU score; negatives weighted
    alpha * p^gamma, positives by their IoU."""
    weight = alpha * logits.sigmoid().detach().pow(gamma) * (1 - one_hot) + score
    return F.binary_cross_entropy_with_logits(logits, score, weight=weight, reduction="none")


def matchability_aware_loss(logits: torch.Tensor, one_hot: torch.Tensor, score: torch.Tensor,
                            gamma: float = 1.5, alpha: float | None = None) -> torch.Tensor:
    """Matchability-aware loss (DEIM, CVPR 2025): BCE towards IoU^gamma; positives weighted 1,
    negatives p^gamma (times alpha when given), so low-IoU matches still get a useful target."""
    negative_weight = logits.sigmoid().detach().pow(gamma) * (1 - one_hot)
    if alpha is not None:
        negative_weight = alpha * negative_weight
    return F.binary_cross_entropy_with_logits(logits, score.pow(gamma), weight=negative_weight + one_hot,
                                              reduction="none")
