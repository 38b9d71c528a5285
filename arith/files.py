"""Files of a run directory: their names, and writes a crash never leaves half done (a tiny module: light to
import)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from arith.errors import storage_error

CONFIG = "config.yaml"  # a run directory's resolved config
PSEUDO = "pseudo"  # a self-improved run's rounds: pseudo/round_<r>/ (arith/selfimprove/label.py writes them)
ROUND_INFO = "round.json"  # beside a round's dataset: its counts per length (the frontier reads them)


def longest_labeled(run_dir: Path) -> int:
    """The longest operand (digits) with a kept self-improvement label in any stored round of `run_dir`, 0 for
    none: the longest numbers a self-improved run trained on beside its own data. A round.json that cannot be
    read is skipped (the untrained-rows warning then errs towards warning)."""
    longest = 0
    for path in (Path(run_dir) / PSEUDO).glob(f"round_*/{ROUND_INFO}"):
        try:
            kept = json.loads(path.read_text()).get("kept", {})
        except (OSError, ValueError):
            continue
        longest = max([longest, *(int(length) for length, n in kept.items() if n)])
    return longest


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
