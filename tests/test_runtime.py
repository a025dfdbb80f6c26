"""Process-wide memory setting of the command line."""

import subprocess
import sys

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
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True).stdout.split()
        results[mode] = (out[0] == "True", float(out[1]))
    assert results["on"][0]
    assert results["on"][1] < 0.6 * results["off"][1]  # the freed half went back to the OS only with the setting
    assert return_large_blocks_to_os() in (True, False)
