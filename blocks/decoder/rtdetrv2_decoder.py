"""RTDETRv2Decoder: RT-DETRv2: Improved Baseline with Bag-of-Freebies for Real-Time Detection Transformer. arXiv 2024. https://arxiv.org/abs/2407.17140

The RT-DETRv2 detection head (also DEIM's RT-DETRv2 variant): projects multi-scale features, picks
the top-k encoder tokens as queries, refines their boxes layer by layer with deformable attention
that samples a per-level number of points, and returns the official output dict (plus contrastive
denoising groups in training).
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.common import activation
from blocks.decoder._deformable_attention import (ProjectedDeformableAttention, TwoStageSelection, generate_anchors,
                                                  initial_queries)
from blocks.decoder._dfine_parts import MLP, prior_logit
from blocks.registry import register
from core.box_ops import inverse_sigmoid

QUERY_SELECT_METHODS = ("default", "one2many", "agnostic")
CROSS_ATTN_METHODS = ("default", "discrete")
QUERY_POS_METHODS = ("default", "as_reg")


class DecoderLayer(nn.Module):
    """Post-norm: self-attention, deformable cross-attention, FFN (official attribute names)."""

    def __init__(self, d_model=256, n_head=8, dim_feedforward=1024, dropout=0.0, act="relu", n_levels=3,
                 n_points=4, cross_attn_method="default"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = ProjectedDeformableAttention(d_model, n_head, n_levels, n_points, method=cross_attn_method)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = activation(act)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)
        init.xavier_uniform_(self.linear1.weight)
        init.xavier_uniform_(self.linear2.weight)

    def forward(self, target, reference_boxes, memory, spatial_shapes, attn_mask=None, query_pos_embed=None):
        q = k = target + query_pos_embed
        attended, _ = self.self_attn(q, k, value=target, attn_mask=attn_mask, need_weights=False)
        target = self.norm1(target + self.dropout1(attended))
        sampled = self.cross_attn(target + query_pos_embed, reference_boxes, memory, spatial_shapes)
        target = self.norm2(target + self.dropout2(sampled))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(target))))
        return self.norm3(target + self.dropout4(ffn))


class RefiningDecoder(nn.Module):
    """Iterative box refinement: each layer predicts a residual (in logit space) on the previous
    layer's box, which it also takes as its (detached) reference."""

    def __init__(self, layer: DecoderLayer, num_layers: int, eval_idx: int):
        super().__init__()
        # every layer starts from the same initial weights, as in the reference
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.eval_idx = eval_idx

    def forward(self, target, ref_boxes_unact, memory, spatial_shapes, bbox_head, score_head, query_pos_head,
                attn_mask=None):
        boxes, logits = [], []
        ref_boxes_detached = F.sigmoid(ref_boxes_unact)
        ref_boxes = None
        output = target
        for i, layer in enumerate(self.layers):
            query_pos_embed = query_pos_head(ref_boxes_detached)
            output = layer(output, ref_boxes_detached.unsqueeze(2), memory, spatial_shapes, attn_mask, query_pos_embed)
            box = F.sigmoid(bbox_head[i](output) + inverse_sigmoid(ref_boxes_detached))
            if self.training:
                logits.append(score_head[i](output))
                # the loss of layer i also reaches layer i-1's box through the undetached reference
                boxes.append(box if i == 0 else F.sigmoid(bbox_head[i](output) + inverse_sigmoid(ref_boxes)))
            elif i == self.eval_idx:
                logits.append(score_head[i](output))
                boxes.append(box)
                break
            ref_boxes = box
            ref_boxes_detached = box.detach()
        return torch.stack(boxes), torch.stack(logits)


@register("decoder", channels=lambda c_in, kw: None, example={
    "shapes": [(2, 16, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)],
    "kwargs": {"num_classes": 3, "hidden_dim": 32, "num_queries": 10, "num_points": [2, 2, 2], "nhead": 4,
               "num_layers": 2, "dim_feedforward": 64, "num_denoising": 6}})
class RTDETRv2Decoder(TwoStageSelection, nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int = 80, hidden_dim: int = 256, num_queries: int = 300,
                 feat_strides=(8, 16, 32), num_levels: int = 3, num_points=4, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.0, activation: str = "relu", num_denoising: int = 100,
                 label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0, learn_query_content: bool = False,
                 eval_spatial_size=None, eval_idx: int = -1, eps: float = 1e-2, aux_loss: bool = True,
                 cross_attn_method: str = "default", query_select_method: str = "default", mlp_act: str = "relu",
                 query_pos_method: str = "default"):
        """Arguments follow the official RTDETRTransformerv2, with DEIM's additions.

        in_channels        channels of the input maps (official `feat_channels`), finest first; each gets a
                           1x1 conv + BN projection, extra levels (num_levels > inputs) stride-2 3x3 convs
        num_points         sampling points per head, one count per level (or one for all)
        eval_idx           the layer whose output is the prediction; later layers only train (dropped by fuse)
        cross_attn_method  "default" (bilinear) or "discrete" (nearest cell, offsets frozen)
        query_select_method "default" (best class score), "one2many" (best (token, class) pairs) or
                           "agnostic" (one objectness score)
        mlp_act, query_pos_method  DEIM: the box/query MLPs' activation; "as_reg" makes the query position
                           head a 3-layer hidden_dim MLP like the box heads ("default": 2 layers, 2 x hidden_dim)
        """
        super().__init__()
        feat_channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        feat_strides = list(feat_strides)
        if len(feat_channels) > num_levels or len(feat_strides) != len(feat_channels):
            raise ArgumentError(f"{len(feat_channels)} input maps need as many feat_strides (got {feat_strides}) "
                             f"and num_levels >= {len(feat_channels)} (got {num_levels})")
        if (query_select_method not in QUERY_SELECT_METHODS or cross_attn_method not in CROSS_ATTN_METHODS
                or query_pos_method not in QUERY_POS_METHODS):
            raise ArgumentError(f"query_select_method must be one of {QUERY_SELECT_METHODS}, cross_attn_method one of "
                             f"{CROSS_ATTN_METHODS}, query_pos_method one of {QUERY_POS_METHODS}")
        if not -num_layers <= eval_idx < num_layers:
            raise ArgumentError(f"eval_idx {eval_idx} is outside the {num_layers} decoder layers")
        feat_strides += [feat_strides[-1] * 2 ** (i + 1) for i in range(num_levels - len(feat_strides))]
        self.hidden_dim, self.feat_strides, self.num_levels = hidden_dim, feat_strides, num_levels
        self.num_classes, self.num_queries, self.eps, self.num_layers = num_classes, num_queries, eps, num_layers
        self.eval_spatial_size = list(eval_spatial_size) if eval_spatial_size else None
        self.aux_loss, self.query_select_method = aux_loss, query_select_method
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx

        self.input_proj = self._input_projections(feat_channels)
        layer = DecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, activation, num_levels, num_points,
                             cross_attn_method)
        self.decoder = RefiningDecoder(layer, num_layers, self.eval_idx)

        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = num_denoising, label_noise_ratio, box_noise_scale
        if num_denoising > 0:
            # the extra last row (index num_classes) is the padding class: zeros, never trained
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
            init.normal_(self.denoising_class_embed.weight[:-1])
        self.learn_query_content = learn_query_content
        if learn_query_content:
            self.tgt_embed = nn.Embedding(num_queries, hidden_dim)
        if query_pos_method == "as_reg":
            self.query_pos_head = MLP(4, hidden_dim, hidden_dim, 3, act=mlp_act)
        else:
            self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2, act=mlp_act)

        self.enc_output = nn.Sequential(OrderedDict([("proj", nn.Linear(hidden_dim, hidden_dim)),
                                                     ("norm", nn.LayerNorm(hidden_dim))]))
        self.enc_score_head = nn.Linear(hidden_dim, 1 if query_select_method == "agnostic" else num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, act=mlp_act)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3, act=mlp_act) for _ in range(num_layers))

        if self.eval_spatial_size:
            anchors, valid_mask = generate_anchors(self._eval_shapes(), eps)
            self.register_buffer("anchors", anchors, persistent=False)
            self.register_buffer("valid_mask", valid_mask, persistent=False)
        self._reset_parameters()

    def _input_projections(self, feat_channels: list[int]) -> nn.ModuleList:
        def project(c_in, kernel, stride):
            return nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c_in, self.hidden_dim, kernel, stride, padding=kernel // 2, bias=False)),
                ("norm", nn.BatchNorm2d(self.hidden_dim))]))

        projections = [project(c, 1, 1) for c in feat_channels]
        c_in = feat_channels[-1]
        for _ in range(self.num_levels - len(feat_channels)):
            projections.append(project(c_in, 3, 2))
            c_in = self.hidden_dim
        return nn.ModuleList(projections)

    def _reset_parameters(self):
        bias = prior_logit(0.01)
        init.constant_(self.enc_score_head.bias, bias)
        for head in (self.enc_bbox_head, *self.dec_bbox_head):
            init.constant_(head.layers[-1].weight, 0)
            init.constant_(head.layers[-1].bias, 0)
        for head in self.dec_score_head:
            init.constant_(head.bias, bias)
        init.xavier_uniform_(self.enc_output[0].weight)
        if self.learn_query_content:
            init.xavier_uniform_(self.tgt_embed.weight)
        init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        init.xavier_uniform_(self.query_pos_head.layers[1].weight)
        for projection in self.input_proj:
            init.xavier_uniform_(projection[0].weight)

    def _encoder_input(self, feats: list[Tensor]):
        projected = [proj(feat) for proj, feat in zip(self.input_proj, feats)]
        for proj in self.input_proj[len(feats):]:
            projected.append(proj(feats[-1] if len(projected) == len(feats) else projected[-1]))
        spatial_shapes = [list(p.shape[2:]) for p in projected]
        return torch.cat([p.flatten(2).permute(0, 2, 1) for p in projected], 1), spatial_shapes

    def _decoder_input(self, memory: Tensor, spatial_shapes, num_queries: int, dn_content=None, dn_boxes_unact=None):
        anchors, valid_mask = self._anchors(spatial_shapes, memory.device)
        memory = valid_mask.to(memory.dtype) * memory
        output_memory = self.enc_output(memory)
        enc_logits = self.enc_score_head(output_memory)
        # the box head runs on every token, as in the reference (its FLOPs are part of the official count)
        enc_boxes_unact = self.enc_bbox_head(output_memory) + anchors
        topk_memory, topk_logits, topk_boxes_unact = self._select_topk(output_memory, enc_logits, enc_boxes_unact,
                                                                       num_queries)
        enc_boxes, enc_logits = ([F.sigmoid(topk_boxes_unact)], [topk_logits]) if self.training else ([], [])
        content, boxes_unact = initial_queries(topk_memory, topk_boxes_unact, num_queries,
                                               self.tgt_embed if self.learn_query_content else None,
                                               dn_content, dn_boxes_unact)
        return content, boxes_unact, enc_boxes, enc_logits

    def forward(self, feats: list[Tensor], targets: list[dict] | None = None) -> dict:
        """feats: the input maps, finest first; targets: training boxes (cxcywh, normalised) for denoising.

        An input too small to hold num_queries tokens gives one query per token instead of failing."""
        memory, spatial_shapes, content, boxes_unact, enc_boxes, enc_logits, attn_mask, dn_meta = \
            self._first_queries(feats, targets)
        out_boxes, out_logits = self.decoder(content, boxes_unact, memory, spatial_shapes, self.dec_bbox_head,
                                             self.dec_score_head, self.query_pos_head, attn_mask=attn_mask)
        if dn_meta is not None:  # a batch without boxes gives empty denoising groups
            dn_boxes, out_boxes = torch.split(out_boxes, dn_meta["dn_num_split"], dim=2)
            dn_logits, out_logits = torch.split(out_logits, dn_meta["dn_num_split"], dim=2)

        out = {"pred_logits": out_logits[-1], "pred_boxes": out_boxes[-1]}
        if self.training and self.aux_loss:
            out["aux_outputs"] = _layer_outputs(out_logits[:-1], out_boxes[:-1])
            out["enc_aux_outputs"] = _layer_outputs(enc_logits, enc_boxes)
            out["enc_meta"] = {"class_agnostic": self.query_select_method == "agnostic"}
            if dn_meta is not None:
                # DEIM's key; the official RT-DETRv2 calls the same list `dn_aux_outputs`
                out["dn_outputs"] = _layer_outputs(dn_logits, dn_boxes)
                out["dn_meta"] = dn_meta
        elif not self.training and dn_meta is not None:  # replayed denoising queries (a distillation teacher)
            out["dn_outputs"] = _layer_outputs(dn_logits[-1:], dn_boxes[-1:])
            out["dn_meta"] = dn_meta
        return out

    def fuse(self):
        """Inference form: the layers after eval_idx (training-only) and their heads are dropped."""
        keep = self.eval_idx + 1
        self.decoder.layers = self.decoder.layers[:keep]
        self.dec_score_head = self.dec_score_head[:keep]
        self.dec_bbox_head = self.dec_bbox_head[:keep]


def _layer_outputs(logits, boxes) -> list[dict]:
    return [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits, boxes)]
