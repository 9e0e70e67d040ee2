"""Atomic file writes: a temporary file beside the target, fsynced, then renamed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file"]


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Write ``target`` atomically: yield a hidden temporary path beside it.

    The caller writes the whole file to the yielded path. When the block ends without
    an exception the file is fsynced and renamed onto ``target`` (``os.replace``, same
    folder, so the rename is atomic), so a killed process or a full disk never leaves a
    truncated file under the final name; the temporary file is removed in every case.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
