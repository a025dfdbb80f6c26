"""The fast core's time loops as a C++ extension (`train.compiled_loops`), built at first use.

`csrc/loops.cpp` runs `fused.py`'s loops step for step on the same buffers; what it saves is python's cost
per small op (a GRU step is some twenty of them). It is built once per machine by torch's extension builder
with the system's C++ compiler and cached (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions);
processes that start together wait on the builder's lock rather than build twice.
"""

import functools
import os
import shutil
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError

SOURCE = Path(__file__).with_name("csrc") / "loops.cpp"
# no FMA contraction: each value is rounded as the python loops round it; no trapping math: GCC vectorizes
# a loop with compare-and-select (the clamp) only without it
CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]


def _ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; the ninja wheel's binary is not there when the virtual
    environment is not activated."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path


def build_tools_missing() -> str | None:
    """Why the loops cannot be built here (no C++ compiler, no ninja), or None."""
    compiler = os.environ.get("CXX", "c++")
    if not shutil.which(compiler):
        return f"the C++ compiler {compiler!r} is not on PATH"
    _ninja_on_path()
    if not shutil.which("ninja"):
        return "ninja is not installed (pip install 'autolfads[compiled]' or pip install ninja)"
    return None


@functools.cache
def compiled_loops() -> ModuleType:
    """The compiled loops' module (built or loaded from the cache the first time a process asks)."""
    missing = build_tools_missing()
    if missing:
        raise ConfigError(
            f"train.compiled_loops builds a C++ extension at first use, but {missing}; install it (a C++ compiler "
            "such as g++, set CXX to another) or set train.compiled_loops false"
        )
    from torch.utils import cpp_extension

    return cpp_extension.load(name="autolfads_loops", sources=[str(SOURCE)], extra_cflags=CFLAGS, verbose=False)
