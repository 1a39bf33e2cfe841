"""DFINEDecoder: D-FINE: Redefine Regression Task of DETRs as Fine-grained Distribution Refinement. ICLR 2025. https://arxiv.org/abs/2410.13842

The D-FINE / DEIM detection head: projects multi-scale features, picks the top-k encoder tokens as
queries, refines their boxes as edge distributions (FDR) with deformable attention, and returns the
official output dict (GO-LSD teacher outputs, denoising groups in training).

Arguments follow the official DFINETransformer (DEIM's version, which adds `mlp_act`):
    in_channels  channels of the input maps (official `feat_channels`), finest first
    activation   FFN and LQE activation; mlp_act: the box/query MLPs' activation (DEIM uses silu
                 for both; the relu defaults reproduce D-FINE)
    eval_idx     the layer whose output is the prediction; later layers only train (fuse drops them)
    reg_max, reg_scale  bins per edge distribution and the curvature of their non-uniform spacing
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.decoder._deformable_attention import TwoStageSelection, generate_anchors, initial_queries
from blocks.decoder._dfine_parts import (MLP, Integral, TransformerDecoder, TransformerDecoderLayer,
                                         prior_logit, weighting_function)
from blocks.registry import register

# Official DFINETransformer state-dict key -> ours (None: not stored, recomputed from the input size).
# Every other key is identical, so `decoder.<key>` in an official checkpoint is `layers.<row>.<key>` here.
OFFICIAL_KEY_RENAMES: dict[str, str | None] = {"anchors": None, "valid_mask": None}

QUERY_SELECT_METHODS = ("default", "one2many", "agnostic")
CROSS_ATTN_METHODS = ("default", "discrete")


@register("decoder", channels=lambda c_in, kw: None, example={
    "shapes": [(2, 16, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)],
    "kwargs": {"num_classes": 3, "hidden_dim": 32, "num_queries": 10, "num_points": [2, 2, 2], "nhead": 4,
               "num_layers": 2, "dim_feedforward": 64, "num_denoising": 6, "reg_max": 8}})
class DFINEDecoder(TwoStageSelection, nn.Module):
    # the choices DEIMv2Decoder changes (D-FINE's here): decoder-layer norm / FFN / gateway, head sharing,
    # and DEIMv2's query head (no enc_output, a 3-layer query_pos_head embedding the initial boxes once)
    _layer_norm, _ffn, _use_gateway = "layer", "mlp", True
    _share_bbox_head = _share_score_head = False
    _deimv2_query_head = False

    def __init__(self, in_channels: list[int], num_classes: int = 80, hidden_dim: int = 256, num_queries: int = 300,
                 feat_strides=(8, 16, 32), num_levels: int = 3, num_points=(3, 6, 3), nhead: int = 8,
                 num_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.0, activation: str = "relu",
                 num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 learn_query_content: bool = False, eval_spatial_size=None, eval_idx: int = -1, eps: float = 1e-2,
                 aux_loss: bool = True, cross_attn_method: str = "default", query_select_method: str = "default",
                 reg_max: int = 32, reg_scale: float = 4.0, layer_scale: float = 1, mlp_act: str = "relu"):
        super().__init__()
        feat_channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        feat_strides = list(feat_strides)
        if len(feat_channels) > num_levels or len(feat_strides) != len(feat_channels):
            raise ArgumentError(f"{len(feat_channels)} input maps need as many feat_strides (got {feat_strides}) "
                             f"and num_levels >= {len(feat_channels)} (got {num_levels})")
        if query_select_method not in QUERY_SELECT_METHODS or cross_attn_method not in CROSS_ATTN_METHODS:
            raise ArgumentError(f"query_select_method must be one of {QUERY_SELECT_METHODS} and cross_attn_method "
                             f"one of {CROSS_ATTN_METHODS}")
        if not -num_layers <= eval_idx < num_layers:
            raise ArgumentError(f"eval_idx {eval_idx} is outside the {num_layers} decoder layers")
        # extra levels are made by stride-2 convs on the coarsest map
        feat_strides += [feat_strides[-1] * 2 ** (i + 1) for i in range(num_levels - len(feat_strides))]
        self.hidden_dim, self.nhead, self.feat_strides, self.num_levels = hidden_dim, nhead, feat_strides, num_levels
        self.num_classes, self.num_queries, self.eps, self.num_layers = num_classes, num_queries, eps, num_layers
        self.eval_spatial_size = list(eval_spatial_size) if eval_spatial_size else None
        self.aux_loss, self.reg_max = aux_loss, reg_max
        self.cross_attn_method, self.query_select_method = cross_attn_method, query_select_method
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx
        scaled_dim = round(layer_scale * hidden_dim)

        self.input_proj = self._input_projections(feat_channels)

        # constants of the weighting function, stored as frozen parameters like the reference (same keys)
        self.up = nn.Parameter(torch.tensor([0.5]), requires_grad=False)
        self.reg_scale = nn.Parameter(torch.tensor([reg_scale]), requires_grad=False)
        layer_options = {"cross_attn_method": cross_attn_method, "norm": self._layer_norm, "ffn": self._ffn,
                         "use_gateway": self._use_gateway}
        layer = TransformerDecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, activation, num_levels,
                                        num_points, **layer_options)
        wide_layer = TransformerDecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, activation, num_levels,
                                             num_points, layer_scale=layer_scale, **layer_options)
        self.decoder = TransformerDecoder(hidden_dim, layer, wide_layer, num_layers, nhead, reg_max, self.reg_scale,
                                          self.up, eval_idx, layer_scale, act=activation,
                                          fixed_query_pos=self._deimv2_query_head)

        self.num_denoising, self.label_noise_ratio = num_denoising, label_noise_ratio
        self.box_noise_scale = box_noise_scale
        if num_denoising > 0:
            # the extra last row (index num_classes) is the padding class: zeros, never trained
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
            init.normal_(self.denoising_class_embed.weight[:-1])
        self.learn_query_content = learn_query_content
        if learn_query_content:
            self.tgt_embed = nn.Embedding(num_queries, hidden_dim)
        if self._deimv2_query_head:
            self.query_pos_head = MLP(4, hidden_dim, hidden_dim, 3, act=mlp_act)
        else:
            self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2, act=mlp_act)
            self.enc_output = nn.Sequential(OrderedDict([("proj", nn.Linear(hidden_dim, hidden_dim)),
                                                         ("norm", nn.LayerNorm(hidden_dim))]))
        self.enc_score_head = nn.Linear(hidden_dim, 1 if query_select_method == "agnostic" else num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, act=mlp_act)

        num_narrow, num_wide = self.eval_idx + 1, num_layers - self.eval_idx - 1
        self.dec_score_head = nn.ModuleList(
            _heads(lambda: nn.Linear(hidden_dim, num_classes), num_narrow, self._share_score_head)
            + [nn.Linear(scaled_dim, num_classes) for _ in range(num_wide)])
        self.pre_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, act=mlp_act)
        self.dec_bbox_head = nn.ModuleList(
            _heads(lambda: MLP(hidden_dim, hidden_dim, 4 * (reg_max + 1), 3, act=mlp_act), num_narrow,
                   self._share_bbox_head)
            + [MLP(scaled_dim, scaled_dim, 4 * (reg_max + 1), 3, act=mlp_act) for _ in range(num_wide)])
        self.integral = Integral(reg_max)

        if self.eval_spatial_size:
            anchors, valid_mask = generate_anchors(self._eval_shapes(), eps)
            self.register_buffer("anchors", anchors, persistent=False)
            self.register_buffer("valid_mask", valid_mask, persistent=False)
        self._reset_parameters(feat_channels)

    def _input_projections(self, feat_channels: list[int]) -> nn.ModuleList:
        def project(c_in, kernel, stride):
            return nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c_in, self.hidden_dim, kernel, stride, padding=kernel // 2, bias=False)),
                ("norm", nn.BatchNorm2d(self.hidden_dim))]))

        projections = [nn.Identity() if c == self.hidden_dim else project(c, 1, 1) for c in feat_channels]
        c_in = feat_channels[-1]
        for _ in range(self.num_levels - len(feat_channels)):
            projections.append(project(c_in, 3, 2))
            c_in = self.hidden_dim
        return nn.ModuleList(projections)

    def _reset_parameters(self, feat_channels):
        bias = prior_logit(0.01)
        init.constant_(self.enc_score_head.bias, bias)
        for head in (self.enc_bbox_head, self.pre_bbox_head, *self.dec_bbox_head):
            init.constant_(head.layers[-1].weight, 0)
            init.constant_(head.layers[-1].bias, 0)
        for head in self.dec_score_head:
            init.constant_(head.bias, bias)
        if not self._deimv2_query_head:
            init.xavier_uniform_(self.enc_output[0].weight)
        if self.learn_query_content:
            init.xavier_uniform_(self.tgt_embed.weight)
        for linear in self.query_pos_head.layers:
            init.xavier_uniform_(linear.weight)
        for projection, c_in in zip(self.input_proj, feat_channels):
            if c_in != self.hidden_dim:
                init.xavier_uniform_(projection[0].weight)

    def _encoder_input(self, feats: list[Tensor]):
        projected = [proj(feat) for proj, feat in zip(self.input_proj, feats)]
        for proj in self.input_proj[len(feats):]:
            projected.append(proj(feats[-1] if len(projected) == len(feats) else projected[-1]))
        spatial_shapes = [list(p.shape[2:]) for p in projected]
        memory = torch.cat([p.flatten(2).permute(0, 2, 1) for p in projected], 1)
        return memory, spatial_shapes

    def _decoder_input(self, memory: Tensor, spatial_shapes, num_queries: int, dn_content=None, dn_boxes_unact=None):
        anchors, valid_mask = self._anchors(spatial_shapes, memory.device)
        anchors = anchors.expand(memory.shape[0], -1, -1)
        memory = valid_mask.to(memory.dtype) * memory

        output_memory = memory if self._deimv2_query_head else self.enc_output(memory)
        enc_logits = self.enc_score_head(output_memory)
        topk_memory, topk_logits, topk_anchors = self._select_topk(output_memory, enc_logits, anchors, num_queries)
        topk_boxes_unact = self.enc_bbox_head(topk_memory) + topk_anchors
        enc_boxes, enc_logits_list = ([F.sigmoid(topk_boxes_unact)], [topk_logits]) if self.training else ([], [])

        content, boxes_unact = initial_queries(topk_memory, topk_boxes_unact, num_queries,
                                               self.tgt_embed if self.learn_query_content else None,
                                               dn_content, dn_boxes_unact)
        return content, boxes_unact, enc_boxes, enc_logits_list

    def forward(self, feats: list[Tensor], targets: list[dict] | None = None) -> dict:
        """feats: the input maps, finest first; targets: training boxes (cxcywh, normalised) for denoising.

        An input too small to hold num_queries tokens gives one query per token instead of failing."""
        memory, spatial_shapes, content, boxes_unact, enc_boxes, enc_logits, attn_mask, dn_meta = \
            self._first_queries(feats, targets)
        project = getattr(self, "project", None)
        if project is None:
            project = weighting_function(self.reg_max, self.up, self.reg_scale)
        out_boxes, out_logits, out_corners, out_refs, pre_boxes, pre_logits = self.decoder(
            content, boxes_unact, memory, spatial_shapes, self.dec_bbox_head, self.dec_score_head,
            self.query_pos_head, self.pre_bbox_head, self.integral, project, attn_mask=attn_mask)

        if dn_meta is not None:
            split = dn_meta["dn_num_split"]
            dn_boxes, out_boxes = torch.split(out_boxes, split, dim=2)
            dn_logits, out_logits = torch.split(out_logits, split, dim=2)
            dn_corners, out_corners = torch.split(out_corners, split, dim=2)
            dn_refs, out_refs = torch.split(out_refs, split, dim=2)

        if not self.training:
            out = {"pred_logits": out_logits[-1], "pred_boxes": out_boxes[-1]}
            if dn_meta is not None:  # replayed denoising queries (a distillation teacher): their final answers
                out["dn_outputs"] = [{"pred_logits": dn_logits[-1], "pred_boxes": dn_boxes[-1],
                                      "pred_corners": dn_corners[-1], "ref_points": dn_refs[-1]}]
                out["dn_meta"] = dn_meta
            return out

        if dn_meta is not None:
            dn_pre_logits, pre_logits = torch.split(pre_logits, split, dim=1)
            dn_pre_boxes, pre_boxes = torch.split(pre_boxes, split, dim=1)

        out = {"pred_logits": out_logits[-1], "pred_boxes": out_boxes[-1], "pred_corners": out_corners[-1],
               "ref_points": out_refs[-1], "up": self.up, "reg_scale": self.reg_scale}
        if self.aux_loss:
            out["aux_outputs"] = _layer_outputs(out_logits[:-1], out_boxes[:-1], out_corners[:-1], out_refs[:-1],
                                                out_corners[-1], out_logits[-1])
            out["enc_aux_outputs"] = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(enc_logits, enc_boxes)]
            out["pre_outputs"] = {"pred_logits": pre_logits, "pred_boxes": pre_boxes}
            out["enc_meta"] = {"class_agnostic": self.query_select_method == "agnostic"}
            if dn_meta is not None:
                out["dn_outputs"] = _layer_outputs(dn_logits, dn_boxes, dn_corners, dn_refs, dn_corners[-1],
                                                   dn_logits[-1])
                out["dn_pre_outputs"] = {"pred_logits": dn_pre_logits, "pred_boxes": dn_pre_boxes}
                out["dn_meta"] = dn_meta
        return out

    def fuse(self):
        """Inference form, as the official convert_to_deploy: only the heads up to eval_idx are kept
        (the decoder's own layers are cut by its fuse) and W(n) becomes a float64-exact constant.
        The denoising embedding stays, as in the official deploy model (its parameter count)."""
        self.dec_score_head = nn.ModuleList([nn.Identity()] * self.eval_idx + [self.dec_score_head[self.eval_idx]])
        self.dec_bbox_head = nn.ModuleList([head if i <= self.eval_idx else nn.Identity()
                                            for i, head in enumerate(self.dec_bbox_head)])
        self.register_buffer("project", weighting_function(self.reg_max, self.up, self.reg_scale, exact=True),
                             persistent=False)


def _heads(make, count: int, shared: bool) -> list[nn.Module]:
    """`count` heads: independent ones, or one module repeated (its parameters counted once, as DEIMv2)."""
    if shared:
        return [make()] * count
    return [make() for _ in range(count)]


def _layer_outputs(logits, boxes, corners, refs, teacher_corners, teacher_logits) -> list[dict]:
    """Per-layer dicts for the auxiliary losses; the last layer's distributions teach the others (GO-LSD)."""
    return [{"pred_logits": lg, "pred_boxes": bx, "pred_corners": cr, "ref_points": rf,
             "teacher_corners": teacher_corners, "teacher_logits": teacher_logits}
            for lg, bx, cr, rf in zip(logits, boxes, corners, refs)]
