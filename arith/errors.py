"""User-facing errors: the entry scripts print these as one line and exit with code 2.

Raise them for anything a user can fix (a bad config value, a missing dataset, a corrupt checkpoint, a full
disk); let genuine bugs raise ordinary exceptions with their traceback.
"""

from __future__ import annotations

import errno
import os
import re


class ArithError(Exception):
    """Base class: a problem the user can fix; the message names the key or file and what is valid."""


class ConfigError(ArithError):
    pass


class DataError(ArithError):
    pass


class CheckpointError(ArithError):
    pass


class StorageError(ArithError):
    """The file system refused a read or a write (full disk, file-size limit, permissions, read-only)."""


class DivergedError(ArithError):
    """Training produced a non-finite loss or weights; nothing after the last finite checkpoint was saved."""


class RunLockedError(ArithError):
    """Another trainer holds the run directory."""


class ArithWarning(UserWarning):
    """Something was wrong but work goes on (e.g. a corrupt checkpoint skipped); entry scripts print one line."""


def require(condition: bool, message: str, exc: type[ArithError] = ConfigError) -> None:
    if not condition:
        raise exc(message)


_HINTS = {
    errno.ENOSPC: "the disk is full: free space",
    errno.EDQUOT: "the disk quota is exceeded: free space",
    errno.EFBIG: "the file is over a size limit (ulimit -f or the file system's): raise the limit",
    errno.EACCES: "permission denied: check the owner and mode of the folder",
    errno.EPERM: "operation not permitted: check the owner and mode of the folder",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENOENT: "no such file or folder",
}


def storage_error(e: OSError, action: str, path: os.PathLike | str | None = None) -> StorageError:
    """One line from an OSError: what failed on which file, why, and what to do."""
    target = path if path is not None else (e.filename or "?")
    hint = _HINTS.get(e.errno, e.strerror or type(e).__name__)
    return StorageError(f"cannot {action} {target}: {hint} ({errno.errorcode.get(e.errno, e.errno)})")


def write_error(e: Exception, path: os.PathLike | str) -> StorageError:
    """One line for a failed write, from an OSError or from a library that reports the OS error in its message
    (safetensors, tokenizers: "... (os error 28)"); other messages are kept with a hint."""
    if isinstance(e, OSError) and e.errno is not None:
        return storage_error(e, "write", path)
    code = re.search(r"os error (\d+)", str(e))
    if code:
        return storage_error(OSError(int(code.group(1)), ""), "write", path)
    return StorageError(f"cannot write {path}: {type(e).__name__}: {e} (is the disk full?)")
