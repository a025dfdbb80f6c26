"""The one atomic file writer: every file autolfads writes (text, JSON, HDF5, NWB, checkpoints) goes through it;
and the one check that a command's outputs are none of its inputs (`check_distinct`).

A file is written under a temporary name beside its final one, flushed to disk, then renamed over it and
the folder flushed too: readers never see half a file, and a failed or killed write leaves the old file.
"""

import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from autolfads.errors import ConfigError

PathArg = str | os.PathLike[str]
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


def check_distinct(
    outputs: Mapping[str, PathArg | None],
    inputs: Mapping[str, PathArg | Iterable[PathArg] | None] | None = None,
) -> None:
    """Refuse, before anything is written, an output that is one of the command's inputs or another of its
    outputs: the same path, or the same file reached through a symlink, `..` or a hard link. The keys name
    each path in the message (an option such as "--out", or what the file is); None values are skipped, and an
    input may be several paths (a folder's files, --tensors A B)."""
    named_inputs = [(name, Path(p)) for name, value in (inputs or {}).items() for p in _paths(value)]
    named_outputs = [(name, Path(value)) for name, value in outputs.items() if value is not None]
    for i, (name, path) in enumerate(named_outputs):
        for input_name, input_path in named_inputs:
            if same_file(path, input_path):
                raise ConfigError(
                    f"{name} {path} is the input {input_name} {input_path}{_how(path, input_path)}: writing it would "
                    f"overwrite that input; choose another {name if name.startswith('-') else 'path'}"
                )
        for other_name, other in named_outputs[:i]:
            if same_file(path, other):
                raise ConfigError(
                    f"{name} {path} is also {other_name} {other}{_how(path, other)}: this command would write both "
                    "into one file; give them different paths"
                )


def same_file(a: PathArg, b: PathArg) -> bool:
    """Whether two paths name one file: equal once symlinks and `..` are resolved, or (both existing) the
    same inode, as hard links are."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): no inode to share
        return False


def _paths(value: PathArg | Iterable[PathArg] | None) -> list[PathArg]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [value]
    return list(value)


def _how(a: Path, b: Path) -> str:
    """How two different spellings name one file, for the message ('' when they are spelled alike)."""
    if a == b:
        return ""
    if a.resolve() == b.resolve():
        return " (the same file through a symlink or '..')"
    return " (a hard link to the same file)"
