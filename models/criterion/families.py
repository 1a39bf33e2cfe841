"""The criteria of each DETR family: one shared implementation (set_criterion.DETRCriterion),
differing only in defaults and in which outputs the family's decoder provides.

  DFINECriterion      D-FINE (ICLR 2025): vfl + boxes + local, union set, loss_ddf = 0 on the final layer
  DEIMCriterion       DEIM (CVPR 2025): as D-FINE with MAL (gamma 1.5) and the union set optional
  DEIMv2Criterion     DEIMv2 (2025): DEIM's criterion; its matcher switches to the IoU-ordered cost
  RTDETRv2Criterion   RT-DETRv2 (2024): vfl + boxes, each layer on its own matching
  RTv4Criterion       RT-DETRv4 (2025): DEIM's criterion plus loss_distill
"""
from __future__ import annotations

from pydantic import NonNegativeFloat

from core.schema import Section
from models.criterion.set_criterion import DETRCriterion


class DFINECriterion(DETRCriterion):
    zero_ddf_on_teacher = True


class DEIMCriterion(DETRCriterion):
    pass


class DEIMv2Criterion(DETRCriterion):
    pass


class RTDETRv2Criterion(DETRCriterion):
    def __init__(self, matcher, weight_dict, losses, alpha=0.2, gamma=2.0, num_classes=80,
                 boxes_weight_format=None, share_matched_indices=False, use_uni_set=False, **options):
        super().__init__(matcher, weight_dict, losses, alpha=alpha, gamma=gamma, num_classes=num_classes,
                         boxes_weight_format=boxes_weight_format, share_matched_indices=share_matched_indices,
                         use_uni_set=use_uni_set, **options)


class DistillAdaptiveParams(Section):
    """RT-DETRv4's epoch-end rule for weight_dict.loss_distill (applied by engine.distill.Distiller)."""
    enabled: bool = False
    rho: float                                  # the target share (%) of the encoder transformer's gradient
    delta: NonNegativeFloat                     # half-width of the band left alone
    default_weight: NonNegativeFloat | None = None   # from stop_epoch on, and when the share is ~0


class RTv4Criterion(DETRCriterion):
    """loss_distill: 1 - cosine between the projected encoder tokens (`student_distill_output`) and the
    foundation teacher's patch tokens (`teacher_encoder_output`), times weight_dict.loss_distill."""

    def __init__(self, *args, distill_adaptive_params: DistillAdaptiveParams | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(distill_adaptive_params, dict):
            distill_adaptive_params = DistillAdaptiveParams.model_validate(distill_adaptive_params)
        self.distill_adaptive_params = distill_adaptive_params.model_dump() if distill_adaptive_params else None
