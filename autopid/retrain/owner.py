"""Who holds a retraining run: a scheduler's identity, and whether a holder on this
machine is gone (so that its run need not wait for the lease to expire)."""

from __future__ import annotations

import hashlib
import os
import platform
import uuid
from pathlib import Path


def _machine() -> str:
    """This kernel boot and PID namespace: two hosts that share a name, or two containers
    on one kernel, differ here, so a pid is only ever looked up where it means something."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "-"  # not Linux: never judged dead by pid, only by its lease
    return hashlib.sha256(f"{boot}:{pidns}".encode()).hexdigest()[:8]


def new_owner() -> str:
    """A scheduler's identity: host, process, a random part (pids are reused) and the
    machine (see :func:`_machine`)."""
    return f"{platform.node()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_machine()}"


def dead_here(owner: str | None) -> bool:
    """True when ``owner`` is a scheduler of this machine whose process is gone (kill -9,
    out of memory): its lease need not be waited out."""
    parts = (owner or "").split(":")
    if len(parts) != 4 or parts[0] != platform.node() or parts[3] in ("-", "") or parts[3] != _machine():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    # alive, or a zombie, or the pid reused: wait for the lease
    return False
