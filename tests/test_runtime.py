"""Process-wide memory setting of the command line."""

import subprocess
import sys
from pathlib import Path

import pytest

from autolfads.runtime import return_large_blocks_to_os


def test_large_blocks_go_back_to_the_os_after_free():
    # In a fresh process: allocate 16 x 20 MiB tensors and free every other one; only with the setting does
    # the freed half leave the process (glibc's heap cannot return holes between live blocks).
    script = """
import resource, sys, torch
from autolfads.runtime import return_large_blocks_to_os
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
applied = return_large_blocks_to_os() if sys.argv[1] == 'on' else False
warm = torch.ones(5 << 20)  # freeing one mmapped block makes glibc serve blocks this size from its heap after
del warm
before = rss()
blocks = [torch.ones(5 << 20) for _ in range(16)]
del blocks[::2]           # free every other block: a fragmented heap keeps them
print(applied, rss() - before)
"""
    results = {}
    for mode in ("on", "off"):
        out = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        results[mode] = (out[0] == "True", float(out[1]))
    assert results["on"][0]
    assert results["on"][1] < 0.6 * results["off"][1]  # the freed half went back to the OS only with the setting
    assert return_large_blocks_to_os() in (True, False)


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text.split("[")[1].split("]")[0] if "[" in text else "unknown"


def test_the_command_line_backs_large_tensors_with_huge_pages():
    """use_huge_pages() before torch is imported: a 64 MiB tensor lands (at least partly) in huge pages; without it,
    in the kernel's madvise mode, none does. After torch is imported it says it cannot take effect."""
    mode = _thp_mode()
    if mode not in ("madvise", "always"):
        pytest.skip(f"transparent huge pages are {mode} on this kernel")
    script = """
import os, sys
from autolfads.runtime import HUGE_PAGES_VARIABLE, use_huge_pages
os.environ.pop(HUGE_PAGES_VARIABLE, None)
applied = use_huge_pages() if sys.argv[1] == 'on' else False
import torch
x = torch.ones(16 << 20)  # 64 MiB
with open('/proc/self/smaps_rollup') as f:
    huge_kib = next(int(line.split()[1]) for line in f if line.startswith('AnonHugePages:'))
print(applied, huge_kib, use_huge_pages())
"""
    results = {}
    for setting in ("on", "off"):
        out = subprocess.run(
            [sys.executable, "-c", script, setting], capture_output=True, text=True, check=True
        ).stdout.split()
        results[setting] = (out[0] == "True", int(out[1]), out[2] == "True")
    assert results["on"][0] and results["on"][1] >= 2048  # at least one 2 MiB huge page
    assert not results["on"][2]  # torch is imported now: too late
    if mode == "madvise":
        assert results["off"][1] < results["on"][1]
