"""Keeping a lease alive during long steps (a search can take hours), and stopping
cleanly when it is lost or when the scheduler is asked to stop."""

from __future__ import annotations

import threading
from types import TracebackType

from autopid._logging import get_logger
from autopid.errors import AutopidError
from autopid.retrain.state import LeaseLost, StateStore

_log = get_logger(__name__)


class Stopped(AutopidError):
    """The scheduler was asked to stop (SIGTERM): the run is released between steps."""


class Heartbeat:
    """Renews the lease of (job, period) every ``interval`` seconds in a daemon thread.

    The steps call :meth:`check` between them: it raises :class:`LeaseLost` once a
    renewal found another owner, and :class:`Stopped` once ``stop`` is set. A process
    that dies stops renewing, so its lease expires and another scheduler takes over.
    """

    def __init__(self, store: StateStore, job: str, period: str, owner: str, lease_s: float, interval: float,
                 stop: threading.Event | None = None) -> None:
        self.store, self.job, self.period, self.owner = store, job, period, owner
        self.lease_s, self.interval = lease_s, interval
        self.stop = stop or threading.Event()
        self._done = threading.Event()
        self.lost: LeaseLost | None = None
        self._thread = threading.Thread(target=self._run, name=f"lease-{job}-{period}", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.store.renew(self.job, self.period, self.owner, self.lease_s)
            except LeaseLost as exc:
                self.lost = exc
                _log.error("%s", exc)
                return
            except Exception as exc:  # a database hiccup: try again at the next beat
                _log.warning("renewing the lease of %s/%s failed: %s", self.job, self.period, exc)

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost
        if self.stop.is_set():
            raise Stopped(f"{self.job}/{self.period}: stopping on request; the run is released")
        # renew now too: a step may have outlasted a beat while the thread was starved
        self.store.renew(self.job, self.period, self.owner, self.lease_s)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=5)
