"""Atomic text files: what the project writes besides checkpoints (checkpoint.py) and HDF5 (data/hdf5.py)."""

import os
import secrets
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` under a temporary name beside `path`, flush it to disk, then rename it over `path`:
    readers never see half a file and a failed write leaves the old one. Raises OSError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
