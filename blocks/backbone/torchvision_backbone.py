"""TorchvisionBackbone: a torchvision classification model as a multi-scale feature extractor. TorchVision. https://github.com/pytorch/vision

Built by name with `weights=None` (never downloads), optionally loaded from a local file; the
modules named in `return_layers` (default: ResNet's layer2..layer4, strides 8/16/32) are taken
with torchvision's FX feature extraction. Returns a list of maps; pick one with an Index row.
As detection backbones usually are (DETR, Deformable DETR), it can be frozen in part: `freeze_norm`
turns every BN into a FrozenBatchNorm2d, `frozen` names the top-level modules (e.g. conv1, layer1)
whose parameters stop training (they still count)."""
import functools

import torch
from torch import nn

from blocks.backbone._hgnetv2 import apply_freezing
from blocks.backbone._weights import load_local_weights
from blocks.registry import ChannelError, register


def _create(name: str, c1: int, return_layers, weights: str | None = None) -> nn.Module:
    # imported here, not at the top: every graph's build imports this module, few use torchvision
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    if c1 != 3:
        raise ChannelError(f"torchvision models take 3 input channels, got {c1}",
                           hint="put the backbone row first (it reads the image), or use TimmBackbone (in_chans)")
    if name not in torchvision.models.list_models():
        raise ChannelError(f"torchvision has no model {name!r}", hint="see torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None)
    if weights:
        load_local_weights(model, weights)
    modules = dict(model.named_modules())
    unknown = [layer for layer in return_layers if layer not in modules]
    if unknown:
        raise ChannelError(f"{name} has no modules {unknown}",
                           hint=f"name modules of the model, e.g. {[n for n in modules if n.count('.') == 0 and n][:8]}")
    return create_feature_extractor(model, return_nodes={layer: str(i) for i, layer in enumerate(return_layers)})


@functools.lru_cache(maxsize=64)
def _feature_channels(name: str, c1: int, return_layers: tuple) -> list[int]:
    with torch.device("meta"), torch.no_grad():  # shapes only: no memory, no init cost
        extractor = _create(name, c1, return_layers).eval()
        return [f.shape[1] for f in extractor(torch.zeros(1, c1, 64, 64)).values()]


def _channels(c_in, kwargs):
    return _feature_channels(kwargs["name"], c_in, tuple(kwargs["return_layers"]))


@register("backbone", channels=_channels,
          example={"args": ["resnet18", ["layer3", "layer4"]], "shape": (2, 3, 32, 32)})
class TorchvisionBackbone(nn.Module):
    def __init__(self, c1: int, name: str, return_layers=("layer2", "layer3", "layer4"), weights: str | None = None,
                 freeze_norm: bool = False, frozen=()):
        super().__init__()
        self.body = _create(name, c1, list(return_layers), weights)
        children = dict(self.body.named_children())
        unknown = [n for n in frozen if n not in children]
        if unknown:
            raise ChannelError(f"{name} has no top-level modules {unknown} to freeze", hint=f"choose from {list(children)}")
        for module_name in frozen:
            apply_freezing(children[module_name], True, False)
        apply_freezing(self.body, False, freeze_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())
