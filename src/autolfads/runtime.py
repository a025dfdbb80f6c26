"""Process-wide settings the command line applies before any work (library users may call them too)."""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers
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


def reuse_freed_memory(keep_bytes: int = 1 << 30) -> bool:
    """Serve every allocation from glibc's heap and keep up to `keep_bytes` of freed memory there, so a training
    step reuses the previous step's activations instead of faulting fresh pages in.

    glibc's default maps blocks above a threshold (at most 32 MiB) fresh from the OS and unmaps them when freed:
    each step of a population then faults in every page of its large activations. Measured on one core
    (mc_maze_small shape, members on one axis): 4 members spent 0.3-0.6 s of each 2 s step in the kernel, with
    this setting none; 8 members trained 1.55x faster (benchmarks/population.py). The RSS stays at the peak of a
    step instead of dropping between steps, and bounded over generations (the heap settles: 4 members 1.24 ->
    1.36 GiB by generation 17 of 30, flat after). Only memory reuse changes, never results. Returns False where
    the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, min(keep_bytes, 2**31 - 1)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False


def set_torch_threads(threads: int | None) -> None:
    """This process's torch intra-op threads (None: torch's default). Every process that trains sets them here:
    `train`, `sample`, the search, its worker processes and Ray trials."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
