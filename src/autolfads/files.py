"""The one atomic file writer: every file autolfads writes (text, JSON, HDF5, NWB, checkpoints) goes through it.

A file is written under a temporary name beside its final one, flushed to disk, then renamed over it and
the folder flushed too: readers never see half a file, and a failed or killed write leaves the old file.
"""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"  # temporaries are ".<name>.<random>.tmp": a killed writer's leftovers match ".*.tmp"


def write_atomic(
    path: str | os.PathLike[str],
    content: str | bytes | Callable[[Path], None],
    *,
    tmp_suffix: str = TMP_SUFFIX,
    mkdir: bool = False,
) -> Path:
    """Write `content` to `path` atomically and return the path. `content` is text (UTF-8), bytes, or a
    callback that writes the file it is given (h5py, pynwb, torch.save). tmp_suffix: the temporary's ending,
    for writers that insist on their own (pynwb: ".tmp.nwb"). mkdir: create a missing folder (else OSError).
    Raises what the writer raises; callers say in their words what could not be written."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{tmp_suffix}")
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to disk: a crash cannot leave the new name on unwritten blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
