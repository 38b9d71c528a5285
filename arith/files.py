"""Files of a run directory written so that a crash never leaves half of one (a tiny module: light to import)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from arith.errors import storage_error

CONFIG = "config.yaml"  # a run directory's resolved config


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over (``os.replace`` is atomic on POSIX); on any
    failure the old file is untouched, and an OSError becomes a one-line StorageError naming the file."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise storage_error(e, "write", path) from None
        raise
