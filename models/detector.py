"""Detector: runs a parsed graph.

Each row's module reads the outputs its `from` names; only outputs that a later row reads are
kept. The last row, when it is a DETR decoder, also receives the training targets and returns
the detection dict (`pred_logits`, `pred_boxes`, and in training the auxiliary outputs). Rows whose
forward takes `pixel_mask` (Deformable DETR's encoder and decoder) receive the padding mask of a
batch of differently sized images (`data.collate.padding_mask`); the others see the padded pixels.
"""
from __future__ import annotations

import torch
from torch import nn

from blocks.common import deploy_form
from core.errors import GraphError
from models.graph import Graph, Row


class Detector(nn.Module):
    def __init__(self, graph: Graph):
        super().__init__()
        self.layers = nn.ModuleList(graph.layers)
        self.rows: list[Row] = graph.rows
        self.save = graph.save
        self.nc = graph.nc
        self.imgsz = graph.imgsz
        self.scale = graph.scale
        self.graph_path = graph.path
        self.graph_spec = graph.raw
        self.deployed = False

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None, pixel_mask: torch.Tensor | None = None):
        return self.run(images, targets, pixel_mask=pixel_mask)[0]

    def run(self, images: torch.Tensor, targets=None, taps=(), check: bool = False, pixel_mask=None):
        """Forward the graph; also return the outputs of the rows in `taps` (by index). `pixel_mask`
        [B, H, W] (True on real pixels) reaches the rows that take it.

        With `check=True` an exception inside a row is re-raised as a GraphError naming the row."""
        taps = set(taps)
        kept: dict[int, object] = {}
        tapped: dict[int, object] = {}
        x = images
        for row, layer in zip(self.rows, self.layers):
            if row.multi_input:
                x = [images if s < 0 else kept[s] for s in row.sources]
            elif row.sources[0] != row.index - 1:
                x = images if row.sources[0] < 0 else kept[row.sources[0]]
            inputs = {**({"targets": targets} if row.takes_targets else {}),
                      **({"pixel_mask": pixel_mask} if row.takes_pixel_mask and pixel_mask is not None else {})}
            if check:
                x = self._checked_call(row, layer, x, inputs)
            else:
                x = layer(x, **inputs)
            if row.index in self.save:
                kept[row.index] = x
            if row.index in taps:
                tapped[row.index] = x
        if self.training and isinstance(x, dict):
            # training-only maps a row exposes for the criterion (RT-DETRv4's projected encoder tokens)
            for layer in self.layers:
                x.update(getattr(layer, "extra_outputs", None) or {})
        return x, tapped

    def _checked_call(self, row: Row, layer: nn.Module, x, inputs: dict):
        where = f"{self.graph_path}, row {row.index} ({row.section}) {row.module}"
        try:
            out = layer(x, **inputs)
        except Exception as err:  # noqa: BLE001 (any failure inside a row is reported against the row)
            shapes = [tuple(t.shape) for t in x] if isinstance(x, (list, tuple)) else tuple(x.shape)
            raise GraphError(f"{row.module} failed on input of shape {shapes}: {type(err).__name__}: {err}",
                             where=where, hint="check this row's `from` and channel args against the rows it reads"
                             ) from err
        declared = row.c_out
        actual = _channels(out)
        if actual is not None and declared is not None and actual != declared:
            raise GraphError(f"{row.module} declares {declared} output channels but produced {actual}",
                             where=where, hint="the block's channel rule or its args are inconsistent")
        return out

    def check(self, imgsz: int = 64):
        """One small eval forward that reports any row that fails, against that row."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self.run(torch.zeros(1, 3, imgsz, imgsz), check=True)
        self.train(was_training)

    def deploy(self, official: bool = False, channels_last: bool = True) -> "Detector":
        """Switch to the inference form in place (`blocks.common.deploy_form`): eval mode, blocks
        re-parameterised (each block's `fuse()`), then every remaining conv+BN pair folded (HGNetv2,
        ResNet, decoder projections) and the conv weights stored channels-last (`channels_last`).

        `official=True` stops after the blocks' `fuse()`: the deploy form of the official code, which
        keeps those BNs and the default layout; its parameter count is the official zoos' `params_deploy`."""
        deploy_form(self, fold=not official, channels_last=channels_last)
        self.deployed = True
        return self


def _channels(out):
    if isinstance(out, torch.Tensor) and out.dim() == 4:
        return out.shape[1]
    if isinstance(out, (list, tuple)) and out and all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in out):
        return [t.shape[1] for t in out]
    return None
