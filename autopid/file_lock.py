"""Advisory ``flock`` locks that the kernel drops when the holder dies (kill -9 included),
so a crash can never leave a search directory or a registry stuck. The holder writes who
it is into the lock file, for the message the next process gets (one search per
directory: :mod:`autopid.search.lock`; the registry's publish step:
:mod:`autopid.publish.registry`)."""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO

from autopid.errors import AutopidError
from autopid.owned_dirs import host_name


class LockHeld(AutopidError):
    """Another process holds the lock file; ``holder`` says who, as it wrote."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path}: held by {holder}")
        self.path = path
        self.holder = holder


class FileLock:
    """An exclusive ``flock`` on ``path``, waiting up to ``timeout_s`` (0: fail at once)."""

    def __init__(self, path: str | Path, timeout_s: float = 0.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._fh: IO[str] | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a+" so that a failed attempt does not truncate the holder's description
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        raise LockHeld(self.path, _describe(fh.read())) from None
                    time.sleep(0.02)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"host": host_name(), "pid": os.getpid(),
                                 "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}) + "\n")
            fh.flush()
        except BaseException:  # Ctrl-C while waiting, a full disk: never keep the file (or the lock)
            fh.close()
            raise
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
