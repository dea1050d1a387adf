"""Starting Ray for autopid without ever touching another Ray on the same host.

On a shared login or analysis node other people run Ray too, and ``ray start`` leaves
its address in ``/tmp/ray``. ``ray.init()`` with no address, which Ray's own helpers call
(Train's placement-group cleaner, the state API), then finds several instances and
fails with "Found multiple active Ray instances", or attaches to someone else's.
autopid's local instance therefore

- lives in a temp directory of its own (not ``/tmp/ray``, which may belong to another user),
- listens on 127.0.0.1 only, on a port chosen before it starts, and
- exports ``RAY_ADDRESS`` with that port before its processes are spawned, so every
  process of the instance, and every helper in them, inherits the right address.

A process killed with ``kill -9`` cannot remove its temp dir; the next start removes the
dirs of this user's instances whose owner process is gone (each dir records its owner's
pid and start time, so a reused pid does not keep a dead instance's dir).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from autopid._logging import get_logger

_log = get_logger(__name__)
_state: dict[str, str] = {}
_PREFIX = "autopid-ray-"
_OWNER = "autopid-owner.json"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    now = _process_start(pid)
    return start is None or now is None or now == start


def sweep_stale(root: str | Path | None = None) -> list[Path]:
    """Remove this user's autopid Ray temp dirs under ``root`` (default: the system temp
    dir) whose owner process is gone; return them. A dir without a readable owner record
    (another tool's, or one being created) is left alone."""
    removed: list[Path] = []
    uid = getattr(os, "getuid", lambda: None)()
    for d in Path(root or tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            if uid is not None and d.stat().st_uid != uid:
                continue
            owner = json.loads((d / _OWNER).read_text())
            pid, start = int(owner["pid"]), owner.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid, start):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_or_attach(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Attach to ``address`` (or ``$RAY_ADDRESS``), else start a private local instance."""
    import ray

    if ray.is_initialized():
        return
    if "temp_dir" in _state:
        shutdown()  # our earlier instance was shut down by someone else: forget its address
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
        return
    for stale in sweep_stale():
        _log.debug("removed the temp dir of a Ray instance whose process is gone: %s", stale)
    temp_dir = tempfile.mkdtemp(prefix=_PREFIX)
    (Path(temp_dir) / _OWNER).write_text(json.dumps({"pid": os.getpid(), "start": _process_start(os.getpid())}))
    last: Exception | None = None
    for _ in range(3):  # the chosen port can be taken between choosing and binding it
        port = _free_port()
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        try:
            # the dashboard serves the state API that Ray Train uses to clean up its placement groups
            ray.init(address="local", num_cpus=num_cpus, logging_level=logging.WARNING, include_dashboard=None,
                     dashboard_host="127.0.0.1", dashboard_port=_free_port(), log_to_driver=log_to_driver,
                     _node_ip_address="127.0.0.1", _temp_dir=temp_dir)
            break
        except Exception as exc:  # noqa: BLE001 - retried, then raised
            last = exc
            ray.shutdown()
    else:
        _restore_env()
        raise RuntimeError(f"could not start a local Ray instance: {last}") from last
    _state["temp_dir"] = temp_dir
    _log.debug("local Ray at 127.0.0.1:%s, temp dir %s", os.environ["RAY_ADDRESS"], temp_dir)
    atexit.register(shutdown)


def _restore_env() -> None:
    os.environ.pop("RAY_GCS_SERVER_PORT", None)
    os.environ.pop("RAY_ADDRESS", None)


def shutdown() -> None:
    """Stop the private local instance (if autopid started one) and remove its temp dir."""
    import ray

    temp_dir = _state.pop("temp_dir", None)
    if temp_dir is None:
        return
    if ray.is_initialized():
        ray.shutdown()
    _restore_env()
    shutil.rmtree(temp_dir, ignore_errors=True)


def temp_dir() -> Path | None:
    """The private instance's temp dir (its logs are under ``session_latest/logs``)."""
    d = _state.get("temp_dir")
    return Path(d) if d else None
