"""TimmBackbone: any timm model as a multi-scale feature extractor. PyTorch Image Models (timm). https://github.com/huggingface/pytorch-image-models

Built with `features_only=True` and `pretrained=False` (never downloads); `out_indices` picks the
stages (default: the last three, strides 8/16/32 for most models). Returns a list of maps, one
per stage, with the channels timm's feature_info reports; pick one with an Index row."""
import functools

import torch
from torch import nn

from blocks.backbone._weights import load_local_weights
from blocks.registry import ChannelError, register


def _create(name: str, c1: int, out_indices) -> nn.Module:
    import timm  # here, not at the top: importing timm costs every run ~1.5 s, and few graphs use it

    if not timm.is_model(name):
        raise ChannelError(f"timm has no model {name!r}", hint="see timm.list_models() for the names")
    return timm.create_model(name, pretrained=False, features_only=True, in_chans=c1, out_indices=tuple(out_indices))


@functools.lru_cache(maxsize=64)
def _feature_channels(name: str, c1: int, out_indices: tuple) -> list[int]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return list(_create(name, c1, out_indices).feature_info.channels())


def _channels(c_in, kwargs):
    return _feature_channels(kwargs["name"], c_in, tuple(kwargs["out_indices"]))


@register("backbone", channels=_channels, example={"args": ["test_efficientnet"], "shape": (2, 3, 32, 32)})
class TimmBackbone(nn.Module):
    def __init__(self, c1: int, name: str, out_indices=(-3, -2, -1), weights: str | None = None):
        super().__init__()
        self.model = _create(name, c1, out_indices)
        if weights:
            load_local_weights(self.model, weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)
