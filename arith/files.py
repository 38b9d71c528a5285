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


def _umask() -> int:
    """The process umask. Linux shows it in /proc/self/status; elsewhere it can only be read by setting it, so
    it is set to 0o077 for the instant between the two calls (a file another thread creates then comes out
    stricter, never looser). Not cached: a process may change its umask, and the tests do."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def umask_mode(dirs: bool = False) -> int:
    """The mode ``open`` / ``mkdir`` would give a new file (0o666) or folder (0o777) under the process umask:
    0o644 / 0o755 under umask 022. ``tempfile.mkstemp`` and ``mkdtemp`` ignore the umask (0o600 / 0o700), so
    whatever they make that is renamed into a run, an export or a report is chmod-ed to this first: a teammate
    in the group can read a shared run."""
    return (0o777 if dirs else 0o666) & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over (``os.replace`` is atomic on POSIX); on any
    failure the old file is untouched, and an OSError becomes a one-line StorageError naming the file. The file
    gets the mode the umask gives a new file (``umask_mode``), not mkstemp's 0o600."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, umask_mode())
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
