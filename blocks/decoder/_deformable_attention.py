"""Multi-scale deformable attention with value and output projections (Deformable DETR, ICLR 2021,
https://arxiv.org/abs/2010.04159), as RT-DETRv2 and Deformable DETR use it, and the anchor grid of
two-stage query selection. The sampling core and the offset initialisation are the D-FINE ones
(blocks/decoder/_dfine_parts.py); this adds the projections and 2-D (per-level point) references.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.decoder._dfine_parts import MSDeformableAttention, deformable_sample


class ProjectedDeformableAttention(MSDeformableAttention):
    """Queries sample `num_points` locations per head and level around their reference; the value
    is projected once per call (`value_proj`) and the heads' mix is projected back (`output_proj`).

    References are boxes [B, Q, 1 or levels, 4] (cxcywh: offsets scale with the box, RT-DETRv2 and
    two-stage Deformable DETR) or points [B, Q, levels, 2] (offsets in cells of each level, Deformable
    DETR); per-level references differ where padding makes each level's real share differ."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points=4,
                 method: str = "default", offset_scale: float = 0.5):
        super().__init__(embed_dim, num_heads, num_levels, num_points, method, offset_scale)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        for proj in (self.value_proj, self.output_proj):
            init.xavier_uniform_(proj.weight)
            init.constant_(proj.bias, 0)

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor, spatial_shapes,
                value_mask: Tensor | None = None) -> Tensor:
        """query [B, Q, C]; value [B, sum(H*W), C] (levels flattened in order); value_mask [B, sum(H*W)]
        True where the value is real (padding is zeroed)."""
        batch, num_query = query.shape[:2]
        value = self.value_proj(value)
        if value_mask is not None:
            value = value * value_mask.to(value.dtype).unsqueeze(-1)
        value = value.reshape(batch, value.shape[1], self.num_heads, self.head_dim).permute(0, 2, 3, 1)
        values = list(value.split([h * w for h, w in spatial_shapes], dim=-1))

        points = sum(self.num_points_list)
        offsets = self.sampling_offsets(query).reshape(batch, num_query, self.num_heads, points, 2)
        weights = F.softmax(self.attention_weights(query).reshape(batch, num_query, self.num_heads, points), dim=-1)
        def level_of_point():  # the level each of the `points` samples from
            return torch.repeat_interleave(torch.arange(self.num_levels, device=query.device),
                                           torch.tensor(self.num_points_list, device=query.device))

        if reference_points.shape[-1] == 2:
            levels = level_of_point()
            cells = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
            locations = reference_points[:, :, None, levels] + offsets / cells[levels]
        elif reference_points.shape[-1] == 4:
            if reference_points.shape[2] > 1:  # one box per level: each point takes its level's
                reference_points = reference_points[:, :, level_of_point()]
            scale = self.num_points_scale.to(dtype=query.dtype).unsqueeze(-1)
            offset = offsets * scale * reference_points[:, :, None, :, 2:] * self.offset_scale
            locations = reference_points[:, :, None, :, :2] + offset
        else:
            raise ArgumentError(f"reference points must end in 2 (points) or 4 (boxes), got {reference_points.shape}")
        out = deformable_sample(values, spatial_shapes, locations, weights, self.num_points_list, self.method,
                                self.weighted_sum)
        return self.output_proj(out)


def generate_anchors(spatial_shapes, eps: float = 1e-2, grid_size: float = 0.05, device=None):
    """Anchor logits [1, sum(H*W), 4] for two-stage query selection: every cell's centre with size
    grid_size * 2^level, as inverse sigmoids; with the mask [1, L, 1] of anchors inside (eps, 1 - eps).
    Anchors outside are +inf, so their tokens never win the top-k."""
    anchors = []
    for level, (h, w) in enumerate(spatial_shapes):
        grid_y, grid_x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        centres = (torch.stack([grid_x, grid_y], dim=-1) + 0.5) / torch.tensor([w, h], dtype=torch.float32)
        sizes = torch.ones_like(centres) * grid_size * (2.0 ** level)
        anchors.append(torch.cat([centres, sizes], dim=-1).reshape(1, h * w, 4))
    anchors = torch.cat(anchors, dim=1).to(device)
    valid_mask = ((anchors > eps) * (anchors < 1 - eps)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors))
    return torch.where(valid_mask, anchors, torch.inf), valid_mask


def initial_queries(topk_memory, topk_boxes_unact, num_queries: int, tgt_embed=None, dn_content=None,
                    dn_boxes_unact=None):
    """The decoder's first queries from two-stage selection: content from the selected tokens (or a
    learned embedding), reference boxes from their predicted boxes, both detached, with the denoising
    queries in front when there are any."""
    if tgt_embed is not None:
        content = tgt_embed.weight[:num_queries].unsqueeze(0).tile([topk_memory.shape[0], 1, 1])
    else:
        content = topk_memory.detach()
    boxes_unact = topk_boxes_unact.detach()
    if dn_boxes_unact is not None:
        boxes_unact = torch.cat([dn_boxes_unact, boxes_unact], dim=1)
        content = torch.cat([dn_content, content], dim=1)
    return content, boxes_unact


class TwoStageSelection:
    """Query selection shared by the two-stage DETR decoders (D-FINE, DEIMv2, RT-DETRv2). The decoder
    provides eval_spatial_size, feat_strides, eps, query_select_method, num_classes, and the `anchors` /
    `valid_mask` buffers built for eval_spatial_size."""

    def _first_queries(self, feats, targets):
        """Encoder tokens, the decoder's first queries (denoising groups in front when training), the
        encoder's top-k outputs, the attention mask and the denoising meta. An input too small to hold
        num_queries tokens gives one query per token."""
        from blocks.decoder._denoising import denoising_queries

        feats = [feats] if isinstance(feats, torch.Tensor) else feats
        memory, spatial_shapes = self._encoder_input(feats)
        num_queries = min(self.num_queries, memory.shape[1])
        dn_content, dn_boxes_unact, attn_mask, dn_meta = denoising_queries(self, targets, num_queries)
        content, boxes_unact, enc_boxes, enc_logits = self._decoder_input(memory, spatial_shapes, num_queries,
                                                                          dn_content, dn_boxes_unact)
        return memory, spatial_shapes, content, boxes_unact, enc_boxes, enc_logits, attn_mask, dn_meta

    def _eval_shapes(self) -> list[list[int]]:
        height, width = self.eval_spatial_size
        return [[int(height / s), int(width / s)] for s in self.feat_strides]

    def _anchors(self, spatial_shapes, device):
        """The cached anchors at the eval size in eval mode; anchors for this input otherwise."""
        if not self.training and self.eval_spatial_size and spatial_shapes == self._eval_shapes():
            return self.anchors, self.valid_mask
        return generate_anchors(spatial_shapes, self.eps, device=device)

    def _select_topk(self, memory, logits, other, topk: int):
        """The top-k tokens by class score: their memory, logits (training only) and `other` rows."""
        if self.query_select_method == "default":
            _, index = torch.topk(logits.max(-1).values, topk, dim=-1)
        elif self.query_select_method == "one2many":
            _, index = torch.topk(logits.flatten(1), topk, dim=-1)
            index = index // self.num_classes
        else:
            _, index = torch.topk(logits.squeeze(-1), topk, dim=-1)

        def pick(x):
            return x.gather(dim=1, index=index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

        return pick(memory), pick(logits) if self.training else None, pick(other)
