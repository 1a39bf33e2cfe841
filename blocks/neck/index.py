"""Index: pick one output of a multi-output row (e.g. one stage of a whole backbone).

`[-1, 1, Index, [2]]` passes on output 2 of the previous row; channels are that output's."""
from torch import nn

from blocks.registry import ChannelError, register


def _picked_channels(c_in, kwargs):
    index = kwargs["index"]
    if not isinstance(c_in, (list, tuple)):
        raise ChannelError("Index needs a multi-output row as input", hint="point `from` at a row that returns a list")
    if not -len(c_in) <= index < len(c_in):
        raise ChannelError(f"Index {index} is out of range for an input with {len(c_in)} outputs",
                           hint=f"use an index in 0..{len(c_in) - 1}")
    return c_in[index]


@register("neck", channels=_picked_channels, c_in=False, example={"args": [1], "shapes": [(2, 8, 16, 16), (2, 16, 8, 8)]})
class Index(nn.Module):
    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, xs):
        return xs[self.index]
