"""One search per directory: an advisory ``flock`` that the kernel drops when the holder
dies (kill -9 included), so a crash can never leave the directory stuck."""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO

from autopid.errors import AutopidError

LOCK_FILE = ".lock"


class DirectoryInUse(AutopidError):
    """Another process holds the directory."""


class DirectoryLock:
    """Hold ``<directory>/.lock`` for the life of this object (or of the process)."""

    def __init__(self, directory: str | Path, what: str = "search") -> None:
        self.directory = Path(directory)
        self.what = what
        self._fh: IO[str] | None = None

    def acquire(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        # "a+" so that a failed attempt does not truncate the holder's description
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _describe(fh.read())
            fh.close()
            raise DirectoryInUse(f"{self.directory}: another {self.what} is running in this directory ({holder}); "
                                 f"wait for it to finish, or use another directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "since": _dt.datetime.now().isoformat(timespec="seconds")}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
