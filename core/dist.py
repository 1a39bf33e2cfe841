"""Distributed training helpers: torchrun/DDP when launched that way, a plain process otherwise.

`torchrun --nproc_per_node=N train.py ...` sets RANK/WORLD_SIZE; we then join a process group
(nccl on CUDA, gloo on CPU). `python train.py ...` runs without any process group. Only rank 0
writes files; every helper here is a no-op in a single process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def launched_world_size() -> int:
    """The process count torchrun launched (1 for a plain `python train.py`), known before `init`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse_device(device: str | None) -> torch.device:
    """`device` as a torch.device that exists here (default: cuda when available, else cpu)."""
    from core.errors import ConfigError

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}", where="-d / device", hint="use cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device type {parsed.type!r} is not supported", where="-d / device",
                          hint="use cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: no CUDA GPU is visible", where="-d / device",
                              hint="use -d cpu, or check CUDA_VISIBLE_DEVICES and the driver")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) are visible "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})", where="-d / device",
                              hint="pick an index that exists")
    return parsed


def init(device: str | None = None) -> torch.device:
    """Join the process group if torchrun started us; return this process's device."""
    parsed = parse_device(device)
    world = launched_world_size()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if parsed.type == "cuda" else "gloo")
    if parsed.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        index = local if world > 1 else (parsed.index or 0)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return parsed


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if enabled():
        dist.barrier()


def cleanup() -> None:
    if enabled():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    if not enabled():
        return model
    if sync_bn and device.type == "cuda":  # SyncBatchNorm has no CPU kernel; gloo runs keep plain BN
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    if not enabled() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: v / world_size() for k, v in zip(keys, tensor.tolist())}


def any_flag(flag: bool) -> bool:
    """True on every rank when any rank raised the flag (keeps skipped steps in lock-step)."""
    if not enabled():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor)
    return bool(tensor.item() > 0)


def gather_objects(obj) -> list:
    if not enabled():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    if not enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
