"""engine.host_memory: large freed tensors stay in the process heap for reuse (glibc only)."""
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# whether a 48 MiB tensor (a 640 px batch's feature map) lies in the process heap (brk), in a fresh process
IN_HEAP = """
import sys
if sys.argv[1] == "reuse":
    from engine.host_memory import keep_freed_host_memory
    assert keep_freed_host_memory()
import torch
block = torch.ones(12 << 20)
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
print(any(int(lo, 16) <= block.data_ptr() < int(hi, 16) for lo, hi in heap))
"""


def _in_heap(mode: str) -> bool:
    done = subprocess.run([sys.executable, "-c", IN_HEAP, mode], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


def test_large_tensors_come_from_the_heap_and_stay_there():
    # glibc's default maps every block above 32 MiB on its own and unmaps it when freed: the next one
    # faults all its pages in again
    assert not _in_heap("default")
    # kept: the block comes from the heap, whose top is no longer trimmed (so freeing it keeps its pages)
    assert _in_heap("reuse")
