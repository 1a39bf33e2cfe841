"""Shared by the fusion blocks: bring every input to one channel width (1x1 Conv where it differs)."""
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv


def channel_aligners(c_in, dim: int) -> nn.ModuleList:
    """One module per input: identity where the input already has `dim` channels, else a 1x1 Conv."""
    if not isinstance(c_in, (list, tuple)):
        raise ArgumentError("a fusion block needs a list of inputs (`from` must be a list)")
    return nn.ModuleList(nn.Identity() if c == dim else Conv(c, dim, 1) for c in c_in)
