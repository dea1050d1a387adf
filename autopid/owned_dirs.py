"""Directories that name the process that made them (``<prefix><pid>.<start>.<random>@<host>``),
so that the next command can remove at once those whose owner is gone (killed mid-publish,
mid-export or mid-preprocessing) instead of waiting a day."""

from __future__ import annotations

import os
import platform
import re
import shutil
import time
import uuid
from pathlib import Path

from autopid._logging import get_logger

_log = get_logger(__name__)

STALE_STAGING_S = 24 * 3600  # directories whose owner cannot be checked (another host, older format)

_OWNED = re.compile(r"^(?P<pid>\d+)\.(?P<start>\d+)\.(?P<rand>[0-9a-f]{8})@(?P<host>[^/@]+)$")


def host_name() -> str:
    return platform.node() or "localhost"


def _proc_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), "0" if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else "0"  # field 22 of the whole line


def _proc_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] in ("Z", "X")


def owner_tag() -> str:
    """``<pid>.<start>.<random>@<host>``: who made a directory (see :func:`owner_gone`)."""
    pid = os.getpid()
    return f"{pid}.{_proc_start(pid)}.{uuid.uuid4().hex[:8]}@{host_name()}"


def make_owned_dir(parent: str | Path, prefix: str) -> Path:
    """A new directory ``parent/<prefix><owner tag>`` (parents created)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{prefix}{owner_tag()}"
    path.mkdir()
    return path


def owner_gone(name: str, prefix: str, *, age_s: float | None = None, stale_after_s: float = STALE_STAGING_S) -> bool:
    """Whether the process that made directory ``name`` (``prefix`` + owner tag) is gone.

    Same host: gone when no process has that pid, or it is a zombie, or its start time
    differs (the pid was reused). Another host, or a name without an owner tag: gone once
    the directory is older than ``stale_after_s`` (``age_s``; unknown age: not gone)."""
    m = _OWNED.match(name[len(prefix):]) if name.startswith(prefix) else None
    if m is None or m.group("host") != host_name():
        return age_s is not None and age_s > stale_after_s
    pid, start = int(m.group("pid")), m.group("start")
    if pid == os.getpid():
        return start != "0" and _proc_start(pid) not in ("0", start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's live process
    if _proc_zombie(pid):
        return True
    now = _proc_start(pid)
    return start != "0" and now != "0" and now != start


def remove_stale_dirs(parent: str | Path, prefixes: tuple[str, ...], *,
                      stale_after_s: float = STALE_STAGING_S) -> list[Path]:
    """Remove the directories ``parent/<prefix>*`` whose owner is gone (:func:`owner_gone`);
    returns them. Errors (a read-only registry, a race with another cleaner) are ignored."""
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        prefix = next((x for x in prefixes if p.name.startswith(x)), None)
        if prefix is None:
            continue
        try:
            if not p.is_dir() or p.is_symlink():
                continue
            age = now - p.stat().st_mtime
        except OSError:
            continue
        if owner_gone(p.name, prefix, age_s=age, stale_after_s=stale_after_s):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                _log.info("removed %s (left by a process that is gone)", p)
                removed.append(p)
    return removed
