"""Who holds a retraining run: a scheduler's identity, and whether a holder on this
machine is gone (so that its run need not wait for the lease to expire)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from autopid.owned_dirs import owner_gone, owner_tag


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
    """A scheduler's identity: ``<pid>.<start>.<random>@<host>:<machine>`` (the process,
    its start time against pid reuse, and the machine of :func:`_machine`)."""
    return f"{owner_tag()}:{_machine()}"


def dead_here(owner: str | None) -> bool:
    """True when ``owner`` is a scheduler of this machine whose process is gone (kill -9,
    out of memory, a zombie, its pid reused): its lease need not be waited out. Owners of
    other machines, or in another format, are never judged here."""
    tag, _, machine = (owner or "").rpartition(":")
    if not tag or machine in ("", "-") or machine != _machine():
        return False
    return owner_gone(tag, "")
