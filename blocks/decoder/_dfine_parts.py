"""Parts of the D-FINE decoder (D-FINE, ICLR 2025, https://arxiv.org/abs/2410.13842).

Submodule and parameter names follow the official DFINETransformer, so official state dicts load
without renaming. Pure PyTorch: the deformable attention samples with `grid_sample`.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.common import activation
from core.box_ops import box_xyxy_to_cxcywh, inverse_sigmoid


def prior_logit(prob: float) -> float:
    """The bias that makes sigmoid output `prob` at initialisation."""
    return -math.log((1 - prob) / prob)


class MLP(nn.Module):
    """`num_layers` linears with an activation between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act="relu"):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims[:-1], dims[1:]))
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


def weighting_function(reg_max: int, up: Tensor, reg_scale: Tensor, exact: bool = False) -> Tensor:
    """D-FINE's non-uniform bin values W(n), n = 0..reg_max: dense near 0, sparse at the ends.

    W(0) = -2a, W(reg_max) = 2a, W(reg_max/2) = 0 and the bins in between grow geometrically
    (step c with c^(reg_max/2 - 1) = a + 1), where a = |up| * |reg_scale|. `exact` computes in float64
    (the official deploy form, a constant for export); otherwise in the parameters' dtype."""
    bound = up.abs() * reg_scale.abs()
    if exact:
        bound = bound.double()
    step = (bound + 1) ** (2 / (reg_max - 2))
    right = step ** torch.arange(1, reg_max // 2, device=up.device, dtype=step.dtype) - 1
    values = torch.cat([-2 * bound, -right.flip(0), torch.zeros_like(bound), right, 2 * bound])
    return values.to(up.dtype)


def distance2bbox(points: Tensor, distance: Tensor, reg_scale: Tensor) -> Tensor:
    """Boxes (cxcywh) from reference boxes (cxcywh) and edge distances (l, t, r, b) in units of w/reg_scale."""
    reg_scale = abs(reg_scale)
    half = 0.5 * reg_scale
    x0 = points[..., 0] - (half + distance[..., 0]) * (points[..., 2] / reg_scale)
    y0 = points[..., 1] - (half + distance[..., 1]) * (points[..., 3] / reg_scale)
    x1 = points[..., 0] + (half + distance[..., 2]) * (points[..., 2] / reg_scale)
    y1 = points[..., 1] + (half + distance[..., 3]) * (points[..., 3] / reg_scale)
    return box_xyxy_to_cxcywh(torch.stack([x0, y0, x1, y1], -1))


class Integral(nn.Module):
    """Expected edge offset sum_n softmax(logits)_n * W(n), per edge; no parameters."""

    def __init__(self, reg_max: int = 32):
        super().__init__()
        self.reg_max = reg_max

    def forward(self, corners: Tensor, project: Tensor) -> Tensor:
        prob = F.softmax(corners.reshape(-1, self.reg_max + 1), dim=1)
        return F.linear(prob, project.to(prob.device)).reshape(*corners.shape[:-1], 4)


class LQE(nn.Module):
    """Location Quality Estimator: adds to the class logits a score read from the sharpness
    (top-k probabilities and their mean) of the four edge distributions."""

    def __init__(self, k: int, hidden_dim: int, num_layers: int, reg_max: int, act="relu"):
        super().__init__()
        self.k, self.reg_max = k, reg_max
        self.reg_conf = MLP(4 * (k + 1), hidden_dim, 1, num_layers, act=act)
        init.constant_(self.reg_conf.layers[-1].bias, 0)
        init.constant_(self.reg_conf.layers[-1].weight, 0)

    def forward(self, scores: Tensor, pred_corners: Tensor) -> Tensor:
        batch, length, _ = pred_corners.shape
        prob = F.softmax(pred_corners.reshape(batch, length, 4, self.reg_max + 1), dim=-1)
        top, _ = prob.topk(self.k, dim=-1)
        stat = torch.cat([top, top.mean(dim=-1, keepdim=True)], dim=-1)
        return scores + self.reg_conf(stat.reshape(batch, length, -1))


class MSDeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR) with a per-level point count, offsets
    scaled by the reference box size / points (D-FINE's variant); 'discrete' samples the nearest cell."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points=4,
                 method: str = "default", offset_scale: float = 0.5):
        super().__init__()
        self.num_heads, self.num_levels, self.offset_scale, self.method = num_heads, num_levels, offset_scale, method
        self.num_points_list = list(num_points) if isinstance(num_points, (list, tuple)) else [num_points] * num_levels
        if len(self.num_points_list) != num_levels:
            raise ArgumentError(f"num_points {self.num_points_list} must give one count per level ({num_levels})")
        if embed_dim % num_heads:
            raise ArgumentError(f"hidden_dim {embed_dim} must be divisible by nhead {num_heads}")
        self.head_dim = embed_dim // num_heads
        points = sum(self.num_points_list)
        self.register_buffer("num_points_scale", torch.tensor(
            [1 / n for n in self.num_points_list for _ in range(n)], dtype=torch.float32))
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * points)
        self._reset_parameters()
        if method == "discrete":
            self.sampling_offsets.requires_grad_(False)
        self.weighted_sum = weighted_sum

    def compile_weighted_sum(self, **options) -> None:
        """torch.compile the weighted sum of the samples (run option `compile`): eager mode writes the
        [.., points] product and reduces it, and its backward broadcasts over rows only `points` wide (12 in
        DEIM-N); compiled, each is one fused loop (DEIM-N shapes: forward 3.0 -> 2.1 ms, backward 7.4 -> 2.5 ms
        on 2 CPU threads).
        Dynamic shapes: the query count changes with each step's denoising groups."""
        self.weighted_sum = torch.compile(weighted_sum, dynamic=True, **options)

    def _reset_parameters(self):
        # each head starts looking along its own direction, k steps out for its k-th point
        init.constant_(self.sampling_offsets.weight, 0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.cat([torch.arange(1, n + 1) for n in self.num_points_list]).reshape(1, -1, 1)
        grid = directions.reshape(self.num_heads, 1, 2).tile([1, sum(self.num_points_list), 1]) * steps
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        init.constant_(self.attention_weights.weight, 0)
        init.constant_(self.attention_weights.bias, 0)

    def forward(self, query: Tensor, reference_boxes: Tensor, values: list[Tensor], spatial_shapes) -> Tensor:
        """query [B,Q,C]; reference_boxes [B,Q,1,4] cxcywh in [0,1]; values: per level [B, heads, head_dim, H*W]."""
        batch, num_query = query.shape[:2]
        points = sum(self.num_points_list)
        offsets = self.sampling_offsets(query).reshape(batch, num_query, self.num_heads, points, 2)
        weights = F.softmax(self.attention_weights(query).reshape(batch, num_query, self.num_heads, points), dim=-1)
        scale = self.num_points_scale.to(dtype=query.dtype).unsqueeze(-1)
        offset = offsets * scale * reference_boxes[:, :, None, :, 2:] * self.offset_scale
        locations = reference_boxes[:, :, None, :, :2] + offset  # [B, Q, heads, points, 2] in [0, 1]
        return deformable_sample(values, spatial_shapes, locations, weights, self.num_points_list, self.method,
                                 self.weighted_sum)


def weighted_sum(samples: Tensor, weights: Tensor) -> Tensor:
    """samples [N, C, Q, points] weighted by weights [N, 1, Q, points], summed over the points -> [N, C, Q]."""
    return (samples * weights).sum(-1)


def deformable_sample(values: list[Tensor], spatial_shapes, locations: Tensor, weights: Tensor,
                      num_points_list: list[int], method: str = "default", combine=weighted_sum) -> Tensor:
    """Weighted sum of bilinear (or nearest-cell) samples of each level at the given locations -> [B, Q, C];
    `combine` computes the sum (`weighted_sum`, or its compiled form)."""
    batch, heads, head_dim, _ = values[0].shape
    num_query = locations.shape[1]
    grids = 2 * locations - 1 if method == "default" else locations
    grids = grids.permute(0, 2, 1, 3, 4).flatten(0, 1).split(num_points_list, dim=-2)
    samples = []
    for level, (h, w) in enumerate(spatial_shapes):
        value = values[level].reshape(batch * heads, head_dim, h, w)
        if method == "default":
            sampled = F.grid_sample(value, grids[level], mode="bilinear", padding_mode="zeros", align_corners=False)
        else:
            cells = (grids[level] * torch.tensor([[w, h]], device=value.device) + 0.5).to(torch.int64)
            cells = torch.stack([cells[..., 0].clamp(0, w - 1), cells[..., 1].clamp(0, h - 1)], -1)
            cells = cells.reshape(batch * heads, num_query * num_points_list[level], 2)
            rows = torch.arange(cells.shape[0], device=value.device)[:, None].expand(-1, cells.shape[1])
            sampled = value[rows, :, cells[..., 1], cells[..., 0]]
            sampled = sampled.permute(0, 2, 1).reshape(batch * heads, head_dim, num_query, num_points_list[level])
        samples.append(sampled)
    weights = weights.permute(0, 2, 1, 3).reshape(batch * heads, 1, num_query, sum(num_points_list))
    out = combine(torch.cat(samples, dim=-1), weights).reshape(batch, heads * head_dim, num_query)
    return out.permute(0, 2, 1)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim with a learned per-channel `scale` (DEIMv2's decoder norm),
    computed in float32 like the official one."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.scale


def make_norm(kind: str, dim: int) -> nn.Module:
    """'layer' -> LayerNorm (D-FINE), 'rms' -> RMSNorm (DEIMv2)."""
    if kind not in ("layer", "rms"):
        raise ArgumentError(f"norm must be 'layer' or 'rms', got {kind!r}")
    return nn.LayerNorm(dim) if kind == "layer" else RMSNorm(dim)


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward: one linear to two halves, silu(a) * b, then the output linear (DEIMv2's FFN)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.w12 = nn.Linear(in_features, 2 * hidden_features)
        self.w3 = nn.Linear(hidden_features, out_features)
        for linear in (self.w12, self.w3):
            init.xavier_uniform_(linear.weight)
            init.constant_(linear.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Gate(nn.Module):
    """Gated fusion of the residual stream and the cross-attention output (starts as 0.5/0.5)."""

    def __init__(self, d_model: int, norm: str = "layer"):
        super().__init__()
        self.gate = nn.Linear(2 * d_model, 2 * d_model)
        init.constant_(self.gate.bias, prior_logit(0.5))
        init.constant_(self.gate.weight, 0)
        self.norm = make_norm(norm, d_model)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        gate1, gate2 = torch.sigmoid(self.gate(torch.cat([x1, x2], dim=-1))).chunk(2, dim=-1)
        return self.norm(gate1 * x1 + gate2 * x2)


class TransformerDecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention through a gate, FFN (post-norm).

    D-FINE: LayerNorm, gate, ReLU/SiLU MLP FFN. DEIMv2: norm="rms", ffn="swiglu" (hidden
    dim_feedforward // 2) and, without the gateway, a plain residual add + norm2."""

    def __init__(self, d_model=256, n_head=8, dim_feedforward=1024, dropout=0.0, activation_name="relu",
                 n_levels=4, n_points=4, cross_attn_method="default", layer_scale=None, norm="layer", ffn="mlp",
                 use_gateway=True):
        super().__init__()
        if ffn not in ("mlp", "swiglu"):
            raise ArgumentError(f"ffn must be 'mlp' or 'swiglu', got {ffn!r}")
        if layer_scale is not None:
            dim_feedforward, d_model = round(layer_scale * dim_feedforward), round(layer_scale * d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.self_attn.counted_with_weights = True  # the official layer returns the weights; ours fuses
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = make_norm(norm, d_model)
        self.cross_attn = MSDeformableAttention(d_model, n_head, n_levels, n_points, method=cross_attn_method)
        self.dropout2 = nn.Dropout(dropout)
        self.use_gateway = use_gateway
        if use_gateway:
            self.gateway = Gate(d_model, norm)
        else:
            self.norm2 = make_norm(norm, d_model)
        if ffn == "swiglu":
            self.swish_ffn = SwiGLUFFN(d_model, dim_feedforward // 2, d_model)
        else:
            self.linear1 = nn.Linear(d_model, dim_feedforward)
            self.activation = activation(activation_name)
            self.dropout3 = nn.Dropout(dropout)
            self.linear2 = nn.Linear(dim_feedforward, d_model)
            init.xavier_uniform_(self.linear1.weight)
            init.xavier_uniform_(self.linear2.weight)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = make_norm(norm, d_model)

    def forward(self, target, reference_boxes, values, spatial_shapes, attn_mask=None, query_pos_embed=None):
        q = k = target + query_pos_embed
        attended, _ = self.self_attn(q, k, value=target, attn_mask=attn_mask, need_weights=False)
        target = self.norm1(target + self.dropout1(attended))
        sampled = self.cross_attn(target + query_pos_embed, reference_boxes, values, spatial_shapes)
        if self.use_gateway:
            target = self.gateway(target, self.dropout2(sampled))
        else:
            target = self.norm2(target + self.dropout2(sampled))
        if hasattr(self, "swish_ffn"):
            ffn = self.swish_ffn(target)
        else:
            ffn = self.linear2(self.dropout3(self.activation(self.linear1(target))))
        # clamp to the fp16 range before the norm, as the reference does for mixed precision
        return self.norm3((target + self.dropout4(ffn)).clamp(min=-65504, max=65504))


class TransformerDecoder(nn.Module):
    """Fine-grained Distribution Refinement: every layer refines the four edge distributions of the
    previous one (residual logits), boxes are their integral around layer 0's box."""

    def __init__(self, hidden_dim, decoder_layer, decoder_layer_wide, num_layers, num_head, reg_max,
                 reg_scale, up, eval_idx=-1, layer_scale=2, act="relu", fixed_query_pos=False):
        super().__init__()
        # fixed_query_pos (DEIMv2): the position embedding of the initial boxes serves every layer;
        # D-FINE re-embeds each layer's refined boxes
        self.fixed_query_pos = fixed_query_pos
        self.hidden_dim, self.num_layers, self.num_head = hidden_dim, num_layers, num_head
        self.layer_scale = layer_scale
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx
        self.up, self.reg_scale, self.reg_max = up, reg_scale, reg_max
        # every decoder layer starts from the same initial weights (deep copies of one), as in the reference
        num_wide = num_layers - self.eval_idx - 1
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(self.eval_idx + 1)]
                                    + [copy.deepcopy(decoder_layer_wide) for _ in range(num_wide)])
        self.lqe_layers = nn.ModuleList([LQE(4, 64, 2, reg_max, act=act) for _ in range(num_layers)])

    def split_values(self, memory: Tensor, spatial_shapes, width: int | None = None) -> list[Tensor]:
        """memory [B, L, C] -> per level [B, heads, C/heads, H*W] (C first resized to `width` for wide layers)."""
        if width is not None:
            memory = F.interpolate(memory, size=width)
        value = memory.reshape(memory.shape[0], memory.shape[1], self.num_head, -1).permute(0, 2, 3, 1)
        return list(value.split([h * w for h, w in spatial_shapes], dim=-1))

    def forward(self, target, ref_points_unact, memory, spatial_shapes, bbox_head, score_head, query_pos_head,
                pre_bbox_head, integral, project, attn_mask=None):
        output = target
        output_detach = pred_corners_undetach = 0
        values = self.split_values(memory, spatial_shapes)
        out_boxes, out_logits, out_corners, out_refs = [], [], [], []
        pre_scores = None
        ref_points_detach = F.sigmoid(ref_points_unact)
        if self.fixed_query_pos:
            query_pos_embed = query_pos_head(ref_points_detach).clamp(min=-10, max=10)
        for i, layer in enumerate(self.layers):
            ref_points_input = ref_points_detach.unsqueeze(2)
            if not self.fixed_query_pos:
                query_pos_embed = query_pos_head(ref_points_detach).clamp(min=-10, max=10)
            if i > self.eval_idx and self.layer_scale > 1:  # wide training-only layers
                query_pos_embed = F.interpolate(query_pos_embed, scale_factor=self.layer_scale)
                values = self.split_values(memory, spatial_shapes, query_pos_embed.shape[-1])
                output = F.interpolate(output, size=query_pos_embed.shape[-1])
                output_detach = output.detach()

            output = layer(output, ref_points_input, values, spatial_shapes, attn_mask, query_pos_embed)
            if i == 0:
                # layer 0 regresses a coarse box from the query's anchor; later layers refine around it
                pre_bboxes = F.sigmoid(pre_bbox_head(output) + inverse_sigmoid(ref_points_detach))
                if self.training:
                    pre_scores = score_head[0](output)
                ref_points_initial = pre_bboxes.detach()

            pred_corners = bbox_head[i](output + output_detach) + pred_corners_undetach
            inter_ref_bbox = distance2bbox(ref_points_initial, integral(pred_corners, project), self.reg_scale)
            if self.training or i == self.eval_idx:
                scores = self.lqe_layers[i](score_head[i](output), pred_corners)
                out_logits.append(scores)
                out_boxes.append(inter_ref_bbox)
                out_corners.append(pred_corners)
                out_refs.append(ref_points_initial)
                if not self.training:
                    break
            pred_corners_undetach = pred_corners
            ref_points_detach = inter_ref_bbox.detach()
            output_detach = output.detach()
        return (torch.stack(out_boxes), torch.stack(out_logits), torch.stack(out_corners), torch.stack(out_refs),
                pre_bboxes, pre_scores)

    def fuse(self):
        """Inference form: drop the layers after eval_idx and the unused quality heads."""
        self.layers = self.layers[: self.eval_idx + 1]
        self.lqe_layers = nn.ModuleList([nn.Identity()] * self.eval_idx + [self.lqe_layers[self.eval_idx]])
