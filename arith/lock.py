"""One trainer per run directory: an exclusive ``flock`` on ``<run_dir>/trainer.lock``, held for the whole run.

The kernel drops a flock when its process dies, however it dies, so a lock left by a killed trainer never
blocks the next one; the pid, host and start time written inside only name the holder in the error. Readers
(evaluation, ``solve``) never take it. flock may not be enforced between hosts on a network file system.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from arith.errors import RunLockedError, storage_error

LOCK = "trainer.lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError naming the holder; never waits."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as to any file
        except OSError as e:
            raise storage_error(e, "create the run's lock file", self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is being trained by {holder} (it holds {self.path}): wait for it to "
                "finish or stop it; evaluating the run meanwhile is fine"
            ) from None
        stamp = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
