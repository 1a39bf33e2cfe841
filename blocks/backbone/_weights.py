"""Loading a library backbone's weights from a local file (never a download)."""
from pathlib import Path

from torch import nn

from core.checkpoint_io import model_weights, read_checkpoint
from core.errors import CheckpointError


def load_local_weights(model: nn.Module, path: str, allow_unexpected: bool = True) -> None:
    """Load a state dict (or a checkpoint holding one under 'state_dict'/'model') into `model`.

    Every parameter of the model must be in the file; extra keys (a classifier head) are ignored
    unless allow_unexpected is False."""
    if not Path(path).is_file():
        raise CheckpointError(f"backbone weights not found: {path}", where=str(path),
                              hint="give the path of a local .pth/.pt file, or drop `weights` to start from scratch")
    state, _ = model_weights(read_checkpoint(path), prefer_ema=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or (unexpected and not allow_unexpected):
        shown = missing or unexpected
        raise CheckpointError(f"backbone weights do not fit: {len(missing)} missing, {len(unexpected)} unexpected "
                              f"keys (e.g. {shown[:3]})", where=str(path),
                              hint="use weights saved from the same model name")
