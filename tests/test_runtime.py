"""Process-wide memory settings of the command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autolfads.runtime import HUGE_PAGES_VARIABLE, reuse_freed_memory


def test_freed_activations_are_reused_without_page_faults_and_memory_stays_flat():
    # In a fresh process (4 KiB pages: no huge pages), twenty "steps" each allocate and fill the same mix of large
    # tensors, then free them. Without the setting glibc maps each large block fresh and every step faults its
    # pages in again; with it the heap settles within a few steps (a fragmentation margin) and the later steps
    # reuse its freed memory: no faults, and the RSS stays where it settled.
    script = """
import resource, sys, torch
from autolfads.runtime import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == 'on' else False
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
def step():
    blocks = [torch.ones(n << 18) for n in (40, 12, 80, 6, 40)]  # 40, 12, 80, 6, 40 MiB
    del blocks
for _ in range(10):
    step()
faults, sizes = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
for _ in range(10):
    step()
    sizes.append(rss())
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, max(sizes) - min(sizes), sizes[-1])
"""
    results = {}
    for mode in ("on", "off"):
        out = subprocess.run(
            [sys.executable, "-c", script, mode],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, HUGE_PAGES_VARIABLE: "0"},
        ).stdout.split()
        results[mode] = (out[0] == "True", int(out[1]), float(out[2]), float(out[3]))
    (applied, faults_on, spread_on, rss_on), (_, faults_off, _, rss_off) = results["on"], results["off"]
    assert applied
    assert faults_off > 5 * 45_000  # ten steps of 178 MiB (45,568 pages of 4 KiB): most faulted in again
    assert faults_on < 0.01 * faults_off
    assert spread_on < 1.0  # flat: every step's memory is the first step's
    assert rss_on > rss_off + 100  # the price: the freed step stays in the process
    assert reuse_freed_memory() is applied  # here as in the fresh interpreter


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
