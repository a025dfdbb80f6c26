"""Process-wide settings the command line applies before any work (library users may call them too)."""

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # PyTorch's switch for madvise(MADV_HUGEPAGE) on large CPU tensors


def use_huge_pages() -> bool:
    """Back large CPU tensors with transparent huge pages (PyTorch's THP_MEM_ALLOC_ENABLE), unless the variable is set.

    A population's activations are large fresh allocations; with 4 KiB pages every step faults each page in.
    With huge pages (kernel THP mode madvise or always) 8-20 members trained 1.1-1.8x faster and one member
    as fast (benchmarks/population.py --huge-pages off on; figures in benchmarks/RESULTS.md).
    PyTorch reads the variable at its first allocation, so this works only before torch is imported: returns
    whether it can still take effect. Only paging changes, never results.
    """
    if "torch" in sys.modules:
        return False
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
    return True


def return_large_blocks_to_os(threshold_bytes: int = 16 << 20) -> bool:
    """Serve allocations above `threshold_bytes` with mmap, so freed activations go back to the OS at once.

    glibc otherwise raises its threshold to 32 MiB and keeps freed tensors' memory in a fragmenting heap: a
    long CPU search's RSS then creeps up generation after generation (measured with benchmarks/population.py,
    8 members: 0.77 -> 1.21 GiB over 8 generations at 32 MiB, flat at 0.51 GiB at 16 MiB). Lower thresholds
    cost speed (1 MiB: a single model's step took twice as long, from page faults on every activation).
    Only memory reuse changes, never results. Returns False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
