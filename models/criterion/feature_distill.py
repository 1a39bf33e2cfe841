"""RT-DETRv4's feature distillation term: align projected student encoder tokens with a vision
foundation model's patch tokens by cosine similarity."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos) over all B*H*W tokens of [B, C, H, W] maps; the teacher map is resized
    (bilinear) to the student's grid first. Channels must already agree (the student is projected)."""
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"student has {student.shape[1]} channels but the teacher {teacher.shape[1]}; "
                         "project the student features to the teacher's width first")
    if student.shape[-2:] != teacher.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    student_tokens = F.normalize(student.flatten(2).transpose(1, 2), dim=-1)
    teacher_tokens = F.normalize(teacher.flatten(2).transpose(1, 2), dim=-1)
    return (1 - F.cosine_similarity(student_tokens, teacher_tokens, dim=-1)).mean()
