"""SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks. ICML 2021. https://proceedings.mlr.press/v139/yang21o.html

Weights each activation by sigmoid of its inverse minimal energy, (x - mean)^2 / (4 (var + lambda)) + 0.5,
from per-channel spatial statistics; no parameters, keeps channels."""
import torch
from torch import nn

from blocks.registry import register


@register("attention", channels="same", c_in=False, example={"args": [], "shape": (2, 32, 16, 16)})
class SimAM(nn.Module):
    def __init__(self, e_lambda: float = 1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1  # the paper's variance uses the other M - 1 neurons
        deviation = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        energy_inv = deviation / (4 * (deviation.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(energy_inv)
