"""Checkpoint files (and every other file a run writes): the one place they are read and written.

Reading is safe: `torch.load(weights_only=True)` (plain tensors and Python values; a file that
would unpickle other objects is refused, since unpickling can run code) or safetensors. Writing is
atomic: a temporary file in the same folder, fsync, rename, so a crash or a full disk never leaves
a torn checkpoint under the real name.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch

from core.errors import CheckpointError

# keys under which checkpoints of the official repos, timm, HF and ours keep a state dict
STATE_DICT_KEYS = ("model", "state_dict", "teacher", "module")


class DiskFullError(CheckpointError):
    """A checkpoint could not be written: no space left, or the folder is read-only."""


def atomic_write(path: str | Path, write) -> None:
    """Call `write(file)` on a temp file in the same folder, fsync, then rename over `path`: a crash,
    Ctrl-C or a full disk leaves the old file or the new one, never a torn one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(temp, path)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise _write_error(path, err) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_atomic(state: dict, path: str | Path, copies=()) -> None:
    """torch.save through `atomic_write`; each path of `copies` then gets the same bytes, copied from
    the file (serializing is most of a save: 0.4 of 0.55 s for a DEIM-N training checkpoint here)."""
    atomic_write(path, lambda f: torch.save(state, f))
    for other in [copies] if isinstance(copies, (str, Path)) else copies:
        atomic_write(other, lambda f: _copy_file_into(path, f))


def _copy_file_into(source: str | Path, f) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f, 1 << 24)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _write_error(path: Path, err: OSError) -> CheckpointError:
    if err.errno == errno.ENOSPC:
        reason, hint = "no space left on the device", "free disk space (or pass --output-dir on another disk)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason, hint = "the folder is not writable", "pass --output-dir a folder you can write to"
    else:
        reason, hint = f"{err.strerror or err}", "check the output folder"
    return DiskFullError(f"cannot write {path}: {reason}; the previous file under this name, if any, is intact",
                         where=str(path), hint=hint)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint file as a dict: `.safetensors` (tensors), or torch with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", hint="check the path given to -r / -t (or -tw)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    with path.open("rb") as f:
        head = f.read(64)
    if head.lstrip().startswith((b"nc:", b"__include__", b"graph:", b"#", b"backbone:")):
        raise CheckpointError(f"{path} is a YAML text file, not a checkpoint", where=str(path),
                              hint="configs go to -c (-sc / -tc in distill.py); -r / -t / -tw take a .pth "
                                   "written by train.py or an official release")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _unreadable(path, err) from None
        # torch's message goes on to suggest allow-listing the refused global; for an untrusted file
        # that is the advice to run its code, so only the refused name is kept
        refused = re.search(r"GLOBAL (\S+)", str(err))
        refused = f"it names {refused.group(1)}" if refused else ""
        raise CheckpointError(f"cannot read checkpoint {path}: refused to unpickle Python objects other than "
                              f"tensors, which could run code ({refused or 'not a plain weights file'})",
                              hint="only if you trust where the file came from: `python -m engine.checkpoint SRC OUT "
                                   f"--trust` rewrites it once as plain tensors (here SRC is {path}); then pass OUT"
                              ) from None
    except Exception as err:  # noqa: BLE001 (any unreadable file is reported the same way)
        raise _unreadable(path, err) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict", where=str(path),
                              hint="save a dict, e.g. torch.save({'model': model.state_dict()}, path)")
    return state


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                           hint="the file is torn or not a torch checkpoint; use another (e.g. last.pth)")


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError("reading .safetensors needs the safetensors package", where=str(path),
                              hint="pip install safetensors, or pass the pytorch_model.bin of the same release") from None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({err})", where=str(path),
                              hint="the file is torn or truncated; download or export it again") from None


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop DDP's `module.` prefix."""
    return {k[7:] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def model_weights(state: dict, prefer_ema: bool = True) -> tuple[dict, str]:
    """The weights to use from a checkpoint (EMA first when present) and which ones they were:
    our checkpoints and the official releases ({'ema': {'module': sd}} / {'model': sd}), timm and
    HF files ({'state_dict': sd}, {'teacher': sd}) and bare state dicts. Tensors only, prefix-free."""
    if prefer_ema and isinstance(state.get("ema"), dict) and isinstance(state["ema"].get("module"), dict):
        weights, source = state["ema"]["module"], "ema"
    else:
        key = next((k for k in STATE_DICT_KEYS if isinstance(state.get(k), dict)), None)
        if key is not None:
            weights, source = state[key], key
        elif state and all(isinstance(v, torch.Tensor) for v in state.values()):
            weights, source = state, "state_dict"
        else:
            raise CheckpointError("checkpoint has no weights (neither `ema.module` nor `model`/`state_dict`, nor "
                                  "a plain state dict)",
                                  hint="pass a checkpoint written by train.py or an official release")
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"the checkpoint's {source} weights hold non-tensor values (e.g. {bad[:3]})",
                              hint="pass a checkpoint written by train.py or an official release")
    return strip_module_prefix(weights), source
