"""Ownership that ends with the process: ``flock`` on a small file holding the owner's pid.

The kernel drops the lock when its process dies, however it dies, so a lock that cannot be
taken means a live owner, and one left behind by a crash is simply taken. The daemon holds
one beside its control socket (one daemon per socket) and one per virtual sink it loads
(no daemon unloads a sink another one owns).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rtupscale.errors import UserError


class LockHeld(UserError):
    """The lock is held by another live process; ``pid`` is its pid where the file says so."""

    def __init__(self, path: Path, pid: int | None):
        self.path, self.pid = path, pid
        super().__init__(f"{path} is held by {'pid ' + str(pid) if pid else 'another process'}")


class LockError(UserError):
    """The lock file cannot be created or opened (missing or read-only folder)."""


class OwnerLock:
    """An exclusive, non-blocking ``flock`` on ``path``, held from :meth:`acquire` to
    :meth:`release` (or the process's end). The file stays; only the lock matters."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock. Raises LockHeld if a live process holds it, LockError if the
        file cannot be opened."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise LockError(f"{self.path}: cannot open the lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(self.path, pid) from None
        except OSError as e:
            os.close(fd)
            raise LockError(f"{self.path}: cannot lock it ({e.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays, empty: a reader never sees a stale pid)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
