"""ModelEMA: an exponential moving average of the weights, with the official warm-up.

decay(u) = decay * (1 - exp(-u / warmups)) after u updates, so early averages follow the model
closely (u counts updates; `start` updates are skipped first). Floating-point buffers are averaged
too; integer buffers (BN's num_batches_tracked) are copied. DEIM's stage 2 restarts the average
from the best stage-1 weights, its decay unchanged (see engine/solver.py)."""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import NonNegativeInt, confloat
from torch import nn

from core.schema import Section


class EMAConfig(Section):
    """The `ema:` section (official keys)."""
    type: Literal["ModelEMA"] = "ModelEMA"
    decay: confloat(gt=0.0, lt=1.0) = 0.9999
    warmups: NonNegativeInt = 1000
    start: NonNegativeInt = 0


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmups: int = 1000, start: int = 0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmups = warmups
        self.start = start
        self.before_start = 0
        self.updates = 0

    def current_decay(self) -> float:
        if self.warmups == 0:
            return self.decay
        return self.decay * (1 - math.exp(-self.updates / self.warmups))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.before_start < self.start:
            self.before_start += 1
            return
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach().to(value.dtype), alpha=1 - d)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay,
                "before_start": self.before_start}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        self.module.load_state_dict(state["module"], strict=strict)
        self.updates = state.get("updates", self.updates)
        self.decay = state.get("decay", self.decay)
        self.before_start = state.get("before_start", self.before_start)

    def to(self, device) -> "ModelEMA":
        self.module.to(device)
        return self
