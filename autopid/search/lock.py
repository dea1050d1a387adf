"""One search per directory: an advisory ``flock`` on ``<directory>/.lock``
(:mod:`autopid.file_lock`), so a crash can never leave the directory stuck."""

from __future__ import annotations

from pathlib import Path

from autopid.errors import AutopidError
from autopid.file_lock import FileLock, LockHeld

LOCK_FILE = ".lock"


class DirectoryInUse(AutopidError):
    """Another process holds the directory."""


class DirectoryLock:
    """Hold ``<directory>/.lock`` for the life of this object (or of the process)."""

    def __init__(self, directory: str | Path, what: str = "search") -> None:
        self.directory = Path(directory)
        self.what = what
        self._lock = FileLock(self.directory / LOCK_FILE)

    def acquire(self) -> DirectoryLock:
        try:
            self._lock.acquire()
        except LockHeld as exc:
            raise DirectoryInUse(f"{self.directory}: another {self.what} is running in this directory "
                                 f"({exc.holder}); wait for it to finish, or use another directory") from None
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
