"""DeformableDETRDecoder: Deformable DETR: Deformable Transformers for End-to-End Object Detection. ICLR 2021. https://arxiv.org/abs/2010.04159

The Deformable DETR decoder and heads over DeformableEncoder's maps: `num_queries` learned queries
(or, two-stage, the top-scoring encoder proposals) pass `num_layers` post-norm layers of
self-attention and multi-scale deformable cross-attention; class and box heads read every layer.
Options as in the paper: iterative box refinement (each layer refines the previous box; heads not
shared) and two-stage. Submodule names follow HF transformers' DeformableDetrForObjectDetection.
A padded batch passes the same `pixel_mask` as DeformableEncoder: padded values are not attended to,
references are scaled to each image's real area, and two-stage proposals come from real cells only
(boxes stay normalised to each image's real area, as HF's).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.decoder._deformable_attention import ProjectedDeformableAttention, generate_anchors
from blocks.decoder._dfine_parts import MLP, prior_logit
from blocks.encoder.deformable_encoder import FFN, level_masks, valid_ratios
from blocks.registry import register
from core.box_ops import inverse_sigmoid


class SelfAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections; the position embedding is added to
    queries and keys, not values."""

    def __init__(self, dim: int, nhead: int):
        super().__init__()
        self.nhead, self.head_dim = nhead, dim // nhead
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        batch, length, dim = x.shape

        def heads(t):
            return t.reshape(batch, length, self.nhead, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x + pos)), heads(self.k_proj(x + pos)), heads(self.v_proj(x))
        weights = F.softmax(torch.matmul(q, k.transpose(2, 3)) * self.head_dim ** -0.5, dim=-1)
        return self.o_proj(torch.matmul(weights, v).transpose(1, 2).reshape(batch, length, dim))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, nhead: int, dim_feedforward: int, dropout: float, act, num_levels: int,
                 num_points: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, nhead)
        self.dropout = nn.Dropout(dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = ProjectedDeformableAttention(dim, nhead, num_levels, num_points)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.mlp = FFN(dim, dim_feedforward, dropout, act)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, target, query_pos, reference_points, memory, spatial_shapes, memory_mask=None):
        target = self.self_attn_layer_norm(target + self.dropout(self.self_attn(target, query_pos)))
        sampled = self.encoder_attn(target + query_pos, reference_points, memory, spatial_shapes, memory_mask)
        target = self.encoder_attn_layer_norm(target + self.dropout(sampled))
        return self.final_layer_norm(target + self.mlp(target))


class Decoder(nn.Module):
    """The layer stack; with box refinement (`bbox_embed` given) each layer's box becomes the next
    layer's (detached) reference. With padding, `ratios` [B, levels, 2] (the real share of each level)
    scale the references, normalised to the real area, to each level's padded canvas."""

    def __init__(self, layer: DecoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, target, query_pos, reference_points, memory, spatial_shapes, bbox_embed=None,
                memory_mask=None, ratios=None):
        hidden, references = [], []
        num_levels = len(spatial_shapes)
        for i, layer in enumerate(self.layers):
            if ratios is not None:
                scale = torch.cat([ratios, ratios], -1) if reference_points.shape[-1] == 4 else ratios
                layer_reference = reference_points[:, :, None] * scale[:, None]
            elif reference_points.shape[-1] == 4:
                layer_reference = reference_points[:, :, None]
            else:
                layer_reference = reference_points[:, :, None].expand(-1, -1, num_levels, -1)
            target = layer(target, query_pos, layer_reference, memory, spatial_shapes, memory_mask)
            if bbox_embed is not None:
                delta = bbox_embed[i](target)
                if reference_points.shape[-1] == 4:
                    refined = delta + inverse_sigmoid(reference_points)
                else:
                    refined = torch.cat([delta[..., :2] + inverse_sigmoid(reference_points), delta[..., 2:]], -1)
                reference_points = refined.sigmoid().detach()
            hidden.append(target)
            references.append(reference_points)
        return hidden, references


def padded_anchors(masks: list[Tensor], eps: float = 1e-2, grid_size: float = 0.05):
    """generate_anchors for a padded batch: [B, sum(H*W), 4] anchor logits, each cell's centre in its
    image's real area (so normalised as the predicted boxes are), size grid_size * 2^level; and the
    mask [B, L, 1] of real cells whose anchor lies inside (eps, 1 - eps). Others are +inf."""
    anchors, real = [], []
    for level, mask in enumerate(masks):
        batch, h, w = mask.shape
        grid_y, grid_x = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=mask.device),
                                        torch.arange(w, dtype=torch.float32, device=mask.device), indexing="ij")
        real_size = torch.stack((mask[:, 0, :].sum(1), mask[:, :, 0].sum(1)), -1).float().view(batch, 1, 1, 2)
        centres = (torch.stack([grid_x, grid_y], dim=-1)[None] + 0.5) / real_size
        sizes = torch.full_like(centres, grid_size * 2.0 ** level)
        anchors.append(torch.cat([centres, sizes], dim=-1).reshape(batch, h * w, 4))
        real.append(mask.reshape(batch, h * w, 1))
    anchors, real = torch.cat(anchors, dim=1), torch.cat(real, dim=1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True) & real
    return torch.where(valid, torch.log(anchors / (1 - anchors)), torch.inf), valid


def proposal_position_embedding(proposals_unact: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """[B, Q, 4] box logits -> [B, Q, 4 * dim/2] sine embedding of the sigmoided box (two-stage queries)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=proposals_unact.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    angles = proposals_unact.sigmoid().float()[:, :, :, None] * (2 * math.pi) / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(2).to(proposals_unact.dtype)


@register("decoder", channels=lambda c_in, kw: None, example={
    "shapes": [(2, 32, 8, 8), (2, 32, 4, 4)],
    "kwargs": {"num_classes": 3, "hidden_dim": 32, "num_queries": 10, "num_levels": 2, "nhead": 4, "num_layers": 2,
               "dim_feedforward": 64, "num_points": 2}})
class DeformableDETRDecoder(nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int = 91, hidden_dim: int = 256, num_queries: int = 300,
                 num_levels: int = 4, nhead: int = 8, num_layers: int = 6, dim_feedforward: int = 1024,
                 dropout: float = 0.1, act="relu", num_points: int = 4, with_box_refine: bool = False,
                 two_stage: bool = False, aux_loss: bool = True):
        """in_channels: DeformableEncoder's maps (all hidden_dim), finest first.
        with_box_refine: each layer refines the previous layer's box, with its own heads.
        two_stage: queries are the encoder's best proposals (scored by an extra class head, class 0 as in
        the reference) instead of learned embeddings; its proposal boxes are the first references.
        num_top_proposals: two-stage proposals kept (the reference's two_stage_num_proposals, = num_queries)."""
        super().__init__()
        channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        if len(channels) != num_levels or any(c != hidden_dim for c in channels):
            raise ArgumentError(f"expects {num_levels} maps of hidden_dim={hidden_dim} channels (a DeformableEncoder's "
                             f"output), got {channels}")
        self.hidden_dim, self.num_queries, self.num_classes = hidden_dim, num_queries, num_classes
        self.with_box_refine, self.two_stage, self.aux_loss = with_box_refine, two_stage, aux_loss
        self.decoder = Decoder(DecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, act, num_levels, num_points),
                               num_layers)
        if two_stage:
            self.enc_output = nn.Linear(hidden_dim, hidden_dim)
            self.enc_output_norm = nn.LayerNorm(hidden_dim)
            self.pos_trans = nn.Linear(hidden_dim * 2, hidden_dim * 2)
            self.pos_trans_norm = nn.LayerNorm(hidden_dim * 2)
        else:
            self.query_position_embeddings = nn.Embedding(num_queries, hidden_dim * 2)
            self.reference_points = nn.Linear(hidden_dim, 2)
            init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            init.constant_(self.reference_points.bias, 0.0)

        class_head, box_head = nn.Linear(hidden_dim, num_classes), MLP(hidden_dim, hidden_dim, 4, 3)
        init.constant_(class_head.bias, prior_logit(0.01))
        init.constant_(box_head.layers[-1].weight, 0)
        init.constant_(box_head.layers[-1].bias, 0)
        # two-stage adds one head pair for the encoder proposals; without refinement all layers share one pair
        num_heads = num_layers + 1 if two_stage else num_layers
        if with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(num_heads))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) for _ in range(num_heads))
        else:
            init.constant_(box_head.layers[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_head] * num_heads)
            self.bbox_embed = nn.ModuleList([box_head] * num_heads)

    def _two_stage_queries(self, memory: Tensor, spatial_shapes, masks=None):
        if masks is None:
            anchors, valid = generate_anchors(spatial_shapes, eps=0.01, device=memory.device)
        else:
            anchors, valid = padded_anchors(masks, eps=0.01)
        proposal_memory = self.enc_output_norm(self.enc_output(memory * valid.to(memory.dtype)))
        enc_logits = self.class_embed[-1](proposal_memory)
        enc_boxes_unact = self.bbox_embed[-1](proposal_memory) + anchors
        topk = min(self.num_queries, memory.shape[1])
        index = torch.topk(enc_logits[..., 0], topk, dim=1).indices
        boxes_unact = enc_boxes_unact.gather(1, index.unsqueeze(-1).expand(-1, -1, 4)).detach()
        query_pos, target = self.pos_trans_norm(self.pos_trans(
            proposal_position_embedding(boxes_unact, self.hidden_dim))).split(self.hidden_dim, dim=2)
        # every proposal is matched class-agnostically on the channel that ranks them
        enc_outputs = {"pred_logits": enc_logits[..., :1], "pred_boxes": enc_boxes_unact.sigmoid()}
        return target, query_pos, boxes_unact.sigmoid(), enc_outputs

    def forward(self, feats: list[Tensor], pixel_mask: Tensor | None = None) -> dict:
        """feats: DeformableEncoder's maps; pixel_mask [B, H, W]: True on real pixels of a padded batch."""
        feats = [feats] if isinstance(feats, Tensor) else feats
        spatial_shapes = [tuple(f.shape[2:]) for f in feats]
        memory = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)
        batch = memory.shape[0]
        masks = None if pixel_mask is None else level_masks(pixel_mask, spatial_shapes)
        memory_mask = None if masks is None else torch.cat([m.flatten(1) for m in masks], 1)
        ratios = None if masks is None else valid_ratios(masks, memory.dtype)
        enc_outputs = None
        if self.two_stage:
            target, query_pos, reference_points, enc_outputs = self._two_stage_queries(memory, spatial_shapes, masks)
        else:
            query_pos, target = self.query_position_embeddings.weight.split(self.hidden_dim, dim=1)
            query_pos, target = query_pos.expand(batch, -1, -1), target.expand(batch, -1, -1)
            reference_points = self.reference_points(query_pos).sigmoid()
        hidden, references = self.decoder(target, query_pos, reference_points, memory, spatial_shapes,
                                          self.bbox_embed if self.with_box_refine else None, memory_mask, ratios)
        logits, boxes = [], []
        for i, (h, previous) in enumerate(zip(hidden, [reference_points] + references[:-1])):
            delta = self.bbox_embed[i](h)
            if previous.shape[-1] == 4:
                box_unact = delta + inverse_sigmoid(previous)
            else:
                box_unact = torch.cat([delta[..., :2] + inverse_sigmoid(previous), delta[..., 2:]], -1)
            logits.append(self.class_embed[i](h))
            boxes.append(box_unact.sigmoid())
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.training and self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1])]
            if enc_outputs is not None:
                out["enc_aux_outputs"] = [enc_outputs]
                out["enc_meta"] = {"class_agnostic": True}
        return out
