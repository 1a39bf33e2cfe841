"""Loading a library backbone's weights from a local file (never a download)."""
from pathlib import Path

import torch
from torch import nn

from models.errors import CheckpointError


def load_local_weights(model: nn.Module, path: str, allow_unexpected: bool = True) -> None:
    """Load a state dict (or a checkpoint holding one under 'state_dict'/'model') into `model`.

    Every parameter of the model must be in the file; extra keys (a classifier head) are ignored
    unless allow_unexpected is False."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}", where=str(path),
                              hint="give the path of a local .pth/.pt file, or drop `weights` to start from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file is the user's checkpoint problem)
        raise CheckpointError(f"cannot read backbone weights: {type(err).__name__}: {err}", where=str(path),
                              hint="the file must be a torch state dict saved with torch.save") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError("backbone weights file holds no state dict", where=str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or (unexpected and not allow_unexpected):
        shown = missing or unexpected
        raise CheckpointError(f"backbone weights do not fit: {len(missing)} missing, {len(unexpected)} unexpected "
                              f"keys (e.g. {shown[:3]})", where=str(path),
                              hint="use weights saved from the same model name")
