"""HyperCompute: Hyper-YOLO: When Visual Object Detection Meets Hypergraph Computation. IEEE TPAMI 2025. https://arxiv.org/abs/2408.04804

Hyper-YOLO's hypergraph computation module: every position is a vertex; each vertex's hyperedge
holds the positions whose features lie within `threshold` (Euclidean distance) of it. A linear
layer, mean vertex-to-edge and edge-to-vertex message passing, a residual, then BN and SiLU. Keeps
channels. Memory grows with the square of the positions (a 40 x 40 map: 1600 x 1600 incidence).

Compared with the authors' code (the plug-in's neck_module/HyperCompute.py, Hyper-YOLO's
HyperComputeModule): max abs diff 6e-8 on (2, 16, 8, 8) with threshold 6 (64% of the position
pairs linked)."""
import torch
from torch import nn

from blocks.registry import register


def mean_messages(x: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
    """incidence (B, T, S) @ x (B, S, C), each target averaged over its sources (0 where it has none)."""
    degree = incidence.sum(2, keepdim=True)
    return (incidence @ x) / degree.clamp(min=1)


@register("neck", channels="same", example={"args": [6.0], "shape": (2, 16, 8, 8)})
class HyperCompute(nn.Module):
    def __init__(self, c: int, threshold: float):
        """c: channels. threshold: distance below which two positions share a hyperedge (Hyper-YOLO
        sets it per model size; its code has no default, so a graph row gives it)."""
        super().__init__()
        self.threshold = threshold
        self.fc = nn.Linear(c, c)
        self.norm = nn.BatchNorm2d(c)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                                  # (B, HW, C)
        with torch.no_grad():   # the hypergraph's structure carries no gradient (a hard threshold)
            incidence = (torch.cdist(tokens, tokens) < self.threshold).to(x.dtype)
        edges = mean_messages(self.fc(tokens), incidence.transpose(1, 2))     # vertex -> hyperedge
        tokens = mean_messages(edges, incidence) + tokens                      # hyperedge -> vertex
        return self.act(self.norm(tokens.transpose(1, 2).reshape(b, c, h, w)))
