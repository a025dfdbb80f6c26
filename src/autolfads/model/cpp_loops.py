"""The manual core's time loops as a C++ extension (`train.recurrent_core cpp`; auto where it builds), built at
first use.

`csrc/loops.cpp` runs `manual_backward.py`'s loops step for step on the same buffers; what it saves is python's cost
per small op (a GRU step is some twenty of them) and, with a matrix-product kernel of its own that ends in the
gate's activation, MKL's per-call cost at the loops' small sizes. It is built once per machine by torch's
extension builder with the system's C++ compiler and cached (TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions); processes that start together wait on a lock rather than build twice, and a build
killed half-way (Ctrl-C, kill -9) leaves no lock behind that would make the next run wait for ever.
On Linux the build is tuned to the CPU it runs on (-march=native: wider vectors, and the kernel's tile sized
to the vector registers), so the cache keeps one build per kind of CPU (and per checkout): machines that
share a home directory never load another CPU's build.
"""

import functools
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError

SOURCE = Path(__file__).with_name("csrc") / "loops.cpp"
# FMA contraction: the matrix-product kernel's multiply-adds are one instruction each; no trapping math: GCC
# vectorizes a loop with compare-and-select (the clamp) only without it
CFLAGS = ["-O3", "-ffp-contract=fast", "-fno-trapping-math", "-fno-math-errno"]
NATIVE = platform.system() == "Linux"  # GCC and Clang there know -march=native


def build_name() -> str:
    """The extension's name, one per checkout of the source (its path and content: two checkouts sharing the
    cache do not rebuild over each other's build) and, where the build is tuned to the CPU, per kind of CPU
    (its flags)."""
    cpu = ""
    if NATIVE:
        try:
            lines = Path("/proc/cpuinfo").read_text().splitlines()
        except OSError:
            lines = []
        cpu = platform.machine() + next((line for line in lines if line.startswith(("flags", "Features"))), "")
    digest = hashlib.sha256(cpu.encode() + str(SOURCE).encode() + SOURCE.read_bytes()).hexdigest()[:12]
    return f"autolfads_loops_{digest}"


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
        return "ninja is not installed (pip install ninja)"
    return None


@functools.cache
def why_not_cpp(device_type: str) -> str | None:
    """Why a run on `device_type` cannot have the C++ loops (built or loaded now when it can), or None."""
    if device_type != "cpu":
        return f"they run on a CPU and this run is on {device_type}"
    missing = build_tools_missing()
    if missing:
        return missing
    try:
        cpp_extension()
    # a compiler that fails on this machine (torch raises RuntimeError, or others): the python loops still run
    except Exception as err:
        return f"their build failed ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


@functools.cache
def cpp_extension() -> ModuleType:
    """The C++ loops' module (built or loaded from the cache the first time a process asks)."""
    missing = build_tools_missing()
    if missing:
        raise ConfigError(
            f"train.recurrent_core cpp builds a C++ extension at first use, but {missing}; install it (a C++ compiler "
            "such as g++, set CXX to another) or set train.recurrent_core manual (or auto)"
        )
    import fcntl

    from torch.utils import cpp_extension

    flags = CFLAGS + (["-march=native"] if NATIVE else [])
    folder = build_directory(build_name())
    folder.mkdir(parents=True, exist_ok=True)
    # torch's own lock is a file that a killed builder leaves behind, and every later build waits on it for
    # ever; an flock is released by the kernel when its holder dies. Whoever holds ours is the only builder,
    # so a torch lock found then is a dead one's.
    with open(folder / "autolfads.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (folder / "lock").unlink(missing_ok=True)
        return cpp_extension.load(
            name=build_name(), sources=[str(SOURCE)], extra_cflags=flags, build_directory=str(folder), verbose=False
        )


def build_directory(name: str) -> Path:
    """Where torch's builder keeps the extension (its own default: TORCH_EXTENSIONS_DIR or the cache)."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / name
