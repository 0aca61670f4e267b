"""File locks (``flock``): the one way Telerad's processes on one machine take turns.

The kernel drops a flock when its process dies, so no lock is ever left stale by
a crash; lock files are created 0600 like everything else under TELERAD_HOME.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_OPEN = os.O_RDWR | os.O_CREAT


@contextmanager
def flocked(path: Path, *, shared: bool = False, flags: int = _OPEN) -> Iterator[int]:
    """Hold an exclusive (or ``shared``) lock on ``path`` for the block; yields the open descriptor."""
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def try_flock(path: Path, timeout: float = 0.0) -> int | None:
    """An exclusive lock on ``path`` held past the block (close the descriptor to release it).

    Returns the descriptor, or None when another process still holds the lock
    after ``timeout`` seconds (or ``path``'s folder is gone).
    """
    deadline = time.monotonic() + timeout
    try:
        fd = os.open(path, _OPEN, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        return None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


def held_by_another(path: Path) -> bool:
    """True when another process holds a lock on ``path`` (probed without waiting, then let go)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got one
    return False
