"""Reproducible weights keyed by OFFICIAL state-dict names, for checks against numbers recorded from
the official implementations (run outside the repo with the same fill and the same image).

Every float tensor is drawn from a generator seeded by the crc32 of its official key, so the official
model and ours (after conversion) hold the same values without sharing any code or checkpoint."""
from __future__ import annotations

import hashlib
import zlib

import torch


def deterministic_fill(state_dict: dict) -> dict:
    out = {}
    for key, tensor in state_dict.items():
        if not tensor.dtype.is_floating_point or key.endswith(("num_points_scale", "anchors")):
            out[key] = tensor
            continue
        noise = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
        if tensor.dim() == 1 and key.endswith("weight"):  # norm scales near 1, so the signal survives depth
            out[key] = 1 + 0.1 * noise
        elif key.endswith("running_var"):
            out[key] = 1 + 0.5 * noise.abs()
        else:  # class heads wide, so scores (and the top-k query selection) are far from ties
            out[key] = noise * (1.0 if ("score_head" in key or "class_embed" in key) else 0.05)
    return out


def sample_images(batch: int = 2, size: int = 128) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def layout_hash(state_dict: dict, skip=("anchors", "valid_mask")) -> tuple[int, str]:
    """(key count, short sha256 of the sorted 'key:shape' lines): equal iff the layouts are equal."""
    lines = sorted(f"{k}:{list(v.shape)}" for k, v in state_dict.items() if not k.endswith(skip))
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def to_official_layout(model) -> dict:
    """Our state dict renamed to the official layout, by inverting the converter's prefix table
    (the longest matching prefix of ours wins; aliases of one prefix keep the first)."""
    from models.convert import official_prefixes

    inverse = {}
    for official, ours in official_prefixes(model).items():
        if ours is not None:
            inverse.setdefault(ours, official)
    prefixes = sorted(inverse, key=len, reverse=True)
    renamed = {}
    for key, value in model.state_dict().items():
        ours = next(p for p in prefixes if key.startswith(p))
        renamed[inverse[ours] + key[len(ours):]] = value
    return renamed
