"""Process-wide settings the command line applies before any work (library users may call them too)."""

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


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
