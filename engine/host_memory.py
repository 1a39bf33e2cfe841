"""Keep freed host memory inside the process for reuse (glibc's malloc only; elsewhere a no-op).

glibc returns large freed blocks to the kernel (each above the mmap threshold is unmapped, and the top
of the heap is trimmed); the next tensor of that size then faults in every page again, zeroed by the
kernel. A DEIM-N training step on the CPU (320 px, batch 4, 2 threads) took about 20 000 such page
faults, 100-130 ms of system time: the decoder's sampled-value products ([32, 16, 496, 12], 12 MB
each) ran at 4 ms instead of 0.8 ms. Raising both thresholds keeps the blocks for the next step
(faults ~20 000 -> under 700 per step, 3-8 % off the step, same step peak RSS), but the whole
benchmark run (training, loader, evaluation) was no faster and its peak RSS 4-7 % higher, and the
process keeps its peak until it exits. So the run option `host_memory_reuse` that calls this at
trainer start is off by default.
"""
from __future__ import annotations

import ctypes
import platform

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks up to 1 GiB come from the heap; the heap's top is never trimmed while the process runs
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = 2 ** 31 - 1


def keep_freed_host_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when both took effect."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
