"""Official D-FINE / DEIM / RT-DETRv2 (and HF Deformable DETR) checkpoints -> detrzoo graphs.

`python -m models.convert SRC -c GRAPH -o OUT [--allow-mismatch]`

An official checkpoint (`{'model': sd}` or `{'ema': {'module': sd}}`, EMA preferred) holds keys
`backbone.*`, `encoder.*`, `decoder.*`. Each graph row that plays an official component takes
that component's keys under its own `layers.<row>.` prefix; the component follows from the
row's module and its order among rows of the same role:

    HGNetv2 -> backbone.            HGStem -> backbone.stem.     HGStage (k-th) -> backbone.stages.<k>.
    HybridEncoder -> encoder.       DFINEDecoder -> decoder.
    PResNet -> backbone.            RTDETRv2Decoder -> decoder.
    DEIMv2: DINOv3STAs -> backbone.   LiteEncoder -> encoder.   DEIMv2Decoder -> decoder.
    rows of a spelled-out HybridEncoder (graphs/ablations/dfine-s-encoder-rows.yaml):
    Conv reading a backbone row (k-th) -> encoder.input_proj.<k>.   other encoder Conv -> encoder.lateral_convs.<k>.
    AIFI -> encoder.encoder.<k>.    SCDown -> encoder.downsample_convs.<k>.0.
    RepNCSPELAN4 / CSPRepLayer: the first (levels - 1) -> encoder.fpn_blocks.<k>., the rest -> encoder.pan_blocks.<k>.

Inside a row the keys are the official ones (the blocks keep the official attribute names), except
the decoder's OFFICIAL_KEY_RENAMES (buffers we recompute). A BN's `num_batches_tracked` is the
one key allowed to be absent on either side (frozen BN has none).

A HF transformers DeformableDetrForObjectDetection state dict (`model.*`, `class_embed.*`,
`bbox_embed.*`; names of transformers 4.x or 5.x) converts onto deformable-detr graphs: the
TorchvisionBackbone row takes `model.backbone.model.`, DeformableEncoder `model.input_proj.`,
`model.level_embed` and `model.encoder.`, DeformableDETRDecoder the decoder, queries and heads.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, cli_main

SECTIONS = ("backbone.", "encoder.", "decoder.")
_FIXED_ROLES = {"HGNetv2": "backbone.", "HGStem": "backbone.stem.", "HybridEncoder": "encoder.",
                "DFINEDecoder": "decoder.", "PResNet": "backbone.", "RTDETRv2Decoder": "decoder.",
                # DEIMv2 (Intellindust-AI-Lab/DEIMv2); RT-DETRv4 needs nothing new (its projector is
                # encoder.feature_projector inside HybridEncoder)
                "DINOv3STAs": "backbone.", "LiteEncoder": "encoder.", "DEIMv2Decoder": "decoder."}
# HF transformers' DeformableDetrForObjectDetection: {HF prefix: the row's own prefix}; None marks a
# tied copy that HF stores twice (the decoder's view of the shared heads)
_HF_ROLES = {
    "TorchvisionBackbone": {"model.backbone.model.": "body.", "model.backbone.conv_encoder.model.": "body."},
    "DeformableEncoder": {"model.input_proj.": "input_proj.", "model.level_embed": "level_embed", "model.encoder.": ""},
    "DeformableDETRDecoder": {
        "model.decoder.bbox_embed.": None, "model.decoder.class_embed.": None, "model.decoder.": "decoder.",
        **{f"model.{name}.": f"{name}." for name in ("query_position_embeddings", "reference_points", "enc_output",
                                                     "enc_output_norm", "pos_trans", "pos_trans_norm")},
        "class_embed.": "class_embed.", "bbox_embed.": "bbox_embed."},
}
# names of transformers releases before 5.0
_HF_LEGACY_RENAMES = [(re.compile(r"(layers\.\d+\.)fc([12])\."), r"\1mlp.fc\2."),
                      (re.compile(r"(decoder\.layers\.\d+\.self_attn\.)out_proj\."), r"\1o_proj.")]
# buffers that follow from the architecture (deformable attention's per-point scale): ours stand
_DERIVED_BUFFERS = ("num_points_scale",)
_COUNTED_ROLES = {"HGStage": "backbone.stages.{}.", "AIFI": "encoder.encoder.{}.",
                  "SCDown": "encoder.downsample_convs.{}.0."}
_FUSION_BLOCKS = ("RepNCSPELAN4", "CSPRepLayer")
_BN_COUNTER = "num_batches_tracked"


@dataclass
class ConversionReport:
    mapped: int = 0
    unmapped: list = field(default_factory=list)      # official keys no row takes
    mismatched: list = field(default_factory=list)    # (official key, its shape, our key, our shape)
    missing: list = field(default_factory=list)       # our keys the checkpoint does not fill
    dropped: list = field(default_factory=list)       # official buffers we recompute

    def __str__(self) -> str:
        text = f"{self.mapped} tensors mapped"
        for name in ("unmapped", "mismatched", "missing"):
            items = getattr(self, name)
            if items:
                text += f", {len(items)} {name} (e.g. {items[0]})"
        return text


def is_official_layout(state_dict: dict) -> bool:
    """True for an official D-FINE/DEIM state dict: backbone./encoder./decoder. keys, no layers. keys."""
    keys = [k[7:] if k.startswith("module.") else k for k in state_dict]
    return bool(keys) and any(k.startswith(SECTIONS) for k in keys) and not any(k.startswith("layers.") for k in keys)


def is_hf_layout(state_dict: dict) -> bool:
    """True for a HF transformers Deformable DETR state dict (model.backbone..., model.encoder...)."""
    return any(k.startswith("model.encoder.layers.") for k in state_dict)


def official_prefixes(model: nn.Module) -> dict[str, str | None]:
    """{official key prefix: our key prefix} for every row of `model` (a Detector) that has one."""
    rows = model.rows
    backbone_rows = {r.index for r in rows if r.section == "backbone"}
    counts = defaultdict(int)
    fusion_rows = [r for r in rows if r.module in _FUSION_BLOCKS and r.section == "encoder"]
    input_projections = [r for r in rows if r.module == "Conv" and r.section == "encoder"
                         and all(s in backbone_rows for s in r.sources)]
    fpn_count = max(len(input_projections) - 1, 0)
    mapping = {}
    for row in rows:
        ours = f"layers.{row.index}."
        if row.module in _HF_ROLES:
            mapping.update({hf: None if inner is None else ours + inner for hf, inner in _HF_ROLES[row.module].items()})
        if row.module in _FIXED_ROLES:
            official = _FIXED_ROLES[row.module]
        elif row.module in _COUNTED_ROLES:
            official = _COUNTED_ROLES[row.module].format(counts[row.module])
            counts[row.module] += 1
        elif row in input_projections:
            official = f"encoder.input_proj.{input_projections.index(row)}."
        elif row.module == "Conv" and row.section == "encoder":
            official = f"encoder.lateral_convs.{counts['lateral']}."
            counts["lateral"] += 1
        elif row in fusion_rows:
            k = fusion_rows.index(row)
            official = f"encoder.fpn_blocks.{k}." if k < fpn_count else f"encoder.pan_blocks.{k - fpn_count}."
        else:
            continue
        mapping[official] = ours
    return mapping


def _decoder_renames() -> dict:
    try:
        from blocks.decoder.dfine_decoder import OFFICIAL_KEY_RENAMES
    except ImportError:
        return {}
    return OFFICIAL_KEY_RENAMES


def convert_official(state_dict: dict, model: nn.Module, strict: bool = False) -> tuple[dict, ConversionReport]:
    """Rename an official state dict onto `model`'s keys.

    Returns (new_state_dict, report). Tensors whose shape differs from ours (e.g. class heads when
    fine-tuning to another nc) are left out and listed in report.mismatched. With strict=True any
    unmapped, mismatched or missing key raises CheckpointError naming them."""
    prefixes = sorted(official_prefixes(model).items(), key=lambda item: -len(item[0]))
    renames = _decoder_renames()
    own = model.state_dict()
    report, converted = ConversionReport(), {}
    for key, value in state_dict.items():
        key = key[7:] if key.startswith("module.") else key
        if key.startswith("model."):
            for pattern, replacement in _HF_LEGACY_RENAMES:
                key = pattern.sub(replacement, key)
        prefix = next((p for p in prefixes if key.startswith(p[0])), None)
        if prefix is None:
            report.unmapped.append(key)
            continue
        if prefix[1] is None:
            report.dropped.append(key)
            continue
        inner = key[len(prefix[0]):]
        if prefix[0] == "decoder." and inner in renames:
            if renames[inner] is None:
                report.dropped.append(key)
                continue
            inner = renames[inner]
        target = prefix[1] + inner
        if target not in own:
            if not key.endswith(_BN_COUNTER):
                report.unmapped.append(key)
            continue
        if own[target].shape != value.shape:
            report.mismatched.append((key, tuple(value.shape), target, tuple(own[target].shape)))
            continue
        converted[target] = value
    # a tied tensor of ours (heads shared across decoder layers) takes the value of its converted twin:
    # HF's save_pretrained stores only one name of each tied group
    converted_by_storage = {own[t].data_ptr(): v for t, v in converted.items() if own[t].numel()}
    for target, value in own.items():
        if target not in converted and value.numel() and value.data_ptr() in converted_by_storage:
            converted[target] = converted_by_storage[own[target].data_ptr()]
    for target, value in own.items():
        if target not in converted and not any(target == m[2] for m in report.mismatched):
            if target.endswith(_BN_COUNTER):
                converted[target] = torch.zeros_like(value)  # the checkpoint had a frozen BN here
            elif target.endswith(_DERIVED_BUFFERS):
                converted[target] = value
            else:
                report.missing.append(target)
    report.mapped = len(converted)
    problems = report.unmapped or report.mismatched or report.missing
    if (strict and problems) or not report.mapped:
        raise CheckpointError(_describe(report), where="official checkpoint",
                              hint="convert with the graph of the same model and size (e.g. dfine-s.yaml for "
                                   "dfine_hgnetv2_s_coco.pth); --allow-mismatch keeps the tensors that fit")
    return converted, report


def _describe(report: ConversionReport, limit: int = 8) -> str:
    parts = [f"{report.mapped} tensors mapped"]
    if report.unmapped:
        parts.append(f"{len(report.unmapped)} official keys map to no row: {report.unmapped[:limit]}")
    if report.mismatched:
        shown = [f"{k} {list(a)} -> {t} {list(b)}" for k, a, t, b in report.mismatched[:limit]]
        parts.append(f"{len(report.mismatched)} shape mismatches: {shown}")
    if report.missing:
        parts.append(f"{len(report.missing)} model keys not in the checkpoint: {report.missing[:limit]}")
    return "; ".join(parts)


def convert_if_official(weights: dict, model: nn.Module) -> tuple[dict, ConversionReport | None]:
    """Official-layout weights (backbone./encoder./decoder. keys, or HF Deformable DETR's) mapped onto
    `model`'s rows, with the report; our own layout unchanged (report None)."""
    if not (is_official_layout(weights) or is_hf_layout(weights)):
        return weights, None
    return convert_official(weights, model)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official checkpoint (.pth)")
    parser.add_argument("-c", "--graph", required=True, help="graph YAML of the same model, e.g. graphs/dfine/dfine-s.yaml")
    parser.add_argument("-o", "--output", required=True, help="where to write {'model': state_dict}")
    parser.add_argument("--nc", type=int, help="class count, if the checkpoint was trained on another dataset")
    parser.add_argument("--allow-mismatch", action="store_true", help="keep what fits instead of failing")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from core.checkpoint_io import model_weights, read_checkpoint, save_atomic
    from models import build_model

    state, _ = model_weights(read_checkpoint(args.source))
    if not (is_official_layout(state) or is_hf_layout(state)):
        raise CheckpointError(f"{args.source} is not in the official layout (no backbone./encoder./decoder. keys, "
                              f"nor HF Deformable DETR's model.encoder.)",
                              hint="detrzoo checkpoints load directly with train.py -t / -r")
    model = build_model(args.graph, nc=args.nc, check=False)
    converted, report = convert_official(state, model, strict=not args.allow_mismatch)
    save_atomic({"model": converted, "meta": {"graph": str(args.graph), "converted_from": str(args.source)}},
                Path(args.output))
    print(f"{args.output}: {report}")


if __name__ == "__main__":
    cli_main(main)
