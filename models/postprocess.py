"""Post-processing: decoder outputs -> per-image detections in original-image pixels.

With sigmoid scores (focal-style training) every (query, class) pair is a candidate and the best
`num_top_queries` pairs are kept, so one query may report several classes (as in RT-DETR/D-FINE).
With softmax scores the last logit is "no object" and each query keeps its best real class.
Boxes are clipped to the image (`clamp_boxes`): a box that a decoder pushed past the border is
never reported outside it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from core.box_ops import box_cxcywh_to_xyxy


class PostProcessor(nn.Module):
    def __init__(self, num_classes: PositiveInt = 80, num_top_queries: PositiveInt = 300, use_focal_loss: bool = True,
                 clamp_boxes: bool = True):
        super().__init__()
        self.clamp_boxes = clamp_boxes
        self.num_classes = int(num_classes)
        self.num_top_queries = int(num_top_queries)
        self.use_focal_loss = use_focal_loss
        self.deploy_mode = False

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_top_queries={self.num_top_queries}, "
                f"use_focal_loss={self.use_focal_loss}")

    def forward(self, outputs: dict, orig_target_sizes: torch.Tensor):
        """orig_target_sizes [B, 2] as (w, h). Returns [{'labels', 'boxes' (xyxy px), 'scores'}] per
        image, sorted by score; after `deploy()` a (labels, boxes, scores) tuple of batched tensors."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        image_size = orig_target_sizes.repeat(1, 2).unsqueeze(1).to(boxes.dtype)
        boxes = box_cxcywh_to_xyxy(boxes) * image_size
        if self.clamp_boxes:
            boxes = torch.minimum(boxes.clamp(min=0), image_size)

        if self.use_focal_loss:
            num_classes = logits.shape[-1]
            scores = logits.sigmoid().flatten(1)
            # never ask top-k for more candidates than Q x C (a 1-2 class model has few)
            scores, index = torch.topk(scores, min(self.num_top_queries, scores.shape[1]), dim=-1)
            # a - a // b * b rather than %: older TensorRT versions lack a modulo op
            labels = index - index // num_classes * num_classes
            query = index // num_classes
        else:
            scores, labels = F.softmax(logits, dim=-1)[..., :-1].max(dim=-1)
            scores, query = torch.topk(scores, min(self.num_top_queries, scores.shape[1]), dim=-1)
            labels = labels.gather(1, query)
        boxes = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))

        if self.deploy_mode:
            return labels, boxes, scores
        return [{"labels": lab, "boxes": box, "scores": sco} for lab, box, sco in zip(labels, boxes, scores)]

    def deploy(self) -> "PostProcessor":
        """Switch to export form: eval mode and a tuple output."""
        self.eval()
        self.deploy_mode = True
        return self


def build_postprocessor(cfg: dict | None, num_classes: int) -> PostProcessor:
    """The run config's `postprocessor:` section (official `type: PostProcessor` accepted) for `num_classes`."""
    from core.schema import check_call

    kwargs = {k: v for k, v in (cfg or {}).items() if k != "type"}
    kwargs["num_classes"] = num_classes
    return PostProcessor(**check_call(PostProcessor, kwargs, "postprocessor"))
