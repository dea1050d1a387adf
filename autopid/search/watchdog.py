"""No silent stall: a Tune stopper that ends the search when no trial has made progress
(started, reported an epoch, ended) for ``stall_timeout_s``, and says what Ray is
waiting for. Also the clean-up of placement groups that ended trials left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from ray.tune import Stopper


class StallWatch(Stopper):
    """Stops the Tune run on a stall, or gracefully on Ctrl-C / SIGTERM (see :meth:`interrupt`)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.last = time.monotonic()
        self.reason: str | None = None
        self.interrupted: str | None = None

    def touch(self) -> None:
        self.last = time.monotonic()

    def interrupt(self, why: str) -> None:
        self.interrupted = why

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.touch()
        return False

    def stop_all(self) -> bool:
        if self.interrupted:
            return True
        idle = time.monotonic() - self.last
        if self.reason is None and idle > self.timeout_s:
            self.reason = f"no trial made progress for {idle:.0f} s (budget.stall_timeout_s = " \
                          f"{self.timeout_s:g}; if an epoch takes longer, resume with --stall-timeout S); " \
                          f"{describe_wait()}"
        return self.reason is not None


def describe_wait() -> str:
    """What the Ray cluster is waiting for, in one sentence."""
    import ray

    try:
        total = ray.cluster_resources()
        free = ray.available_resources()
        table = ray.util.placement_group_table()
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the stall itself
        return f"Ray's state could not be read ({exc})"
    pending = [pg for pg in table.values() if pg.get("state") == "PENDING"]
    parts = [f"{free.get('CPU', 0):g}/{total.get('CPU', 0):g} CPUs free"]
    if total.get("GPU"):
        parts.append(f"{free.get('GPU', 0):g}/{total['GPU']:g} GPUs free")
    for pg in pending[:3]:
        bundles = list((pg.get("bundles") or {}).values())
        kinds = sorted({str(dict(b)) for b in bundles})
        parts.append(f"a placement group is pending, asking for {len(bundles)} x {' or '.join(kinds)}"
                     f" ({pg.get('strategy', '')})")
    if len(pending) > 3:
        parts.append(f"{len(pending) - 3} more placement group(s) pending")
    created = [pg for pg in table.values() if pg.get("state") == "CREATED"]
    if created:
        parts.append(f"{len(created)} placement group(s) hold resources")
    return "Ray: " + "; ".join(parts)


def remove_leftover_placement_groups(own_instance: bool) -> int:
    """Remove placement groups still alive after every trial ended (a Ray Train run killed
    mid-start leaves its workers' group behind). On a shared cluster only this job's."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    removed = 0
    for pg_id, pg in ray.util.placement_group_table().items():
        if pg.get("state") not in ("CREATED", "PENDING", "RESCHEDULING"):
            continue
        if not own_instance and str(pg.get("creator_job_id", "")) != str(job):
            continue
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            removed += 1
        except Exception:  # noqa: BLE001 - already gone
            pass
    return removed


@contextlib.contextmanager
def graceful_signals(watch: StallWatch) -> Iterator[None]:
    """The first Ctrl-C (or SIGTERM) stops the search gracefully: running trials keep their
    last epoch and stay open for --resume. A second Ctrl-C stops at once. Tune's own SIGINT
    handler is switched off so that autopid knows that the stop was asked for."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if watch.interrupted:
            raise KeyboardInterrupt
        watch.interrupt(signal.Signals(signum).name)

    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # SIGTERM too, unless the program has a handler of its own (the retraining scheduler
    # stops after its step); ray.init installs one that just exits, which does not count
    term = signal.getsignal(signal.SIGTERM)
    ours = term in (signal.SIG_DFL, None) or str(getattr(term, "__module__", "")).startswith("ray")
    sigs = [signal.SIGINT] + ([signal.SIGTERM] if ours else [])
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env
