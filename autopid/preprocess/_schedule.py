"""Where the file tasks run: a ``distributed`` cluster, or Dask's local schedulers.

The work is GIL-bound Python and NumPy glue between uproot and Arrow, so local threads
barely overlap; with enough files Dask's ``processes`` scheduler uses every core.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from autopid._logging import get_logger, progress_enabled
from autopid.config.dataset import DatasetConfig
from autopid.preprocess._task import FileStats, FileTask, process_file

_log = get_logger(__name__)

# with fewer files, threads: a forked worker starts on a fresh heap (page faults, some
# 0.3 us per entry) and holds a whole file, so a few files gain little from it
MIN_FILES_FOR_PROCESSES = 4

# shutdowns of finished process pools, still waiting for their workers to exit
_closing: list[threading.Thread] = []


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what a container or taskset leaves us
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def settle() -> None:
    """Wait for the worker processes of finished runs to exit."""
    while True:
        try:
            closing = _closing.pop()
        except IndexError:  # empty, or emptied by another thread meanwhile
            return
        closing.join()


def _can_fork() -> bool:
    """Whether forking is safe: fork starts a worker in milliseconds with every module
    already imported, but only while no other thread could hold a lock at that moment.

    tqdm's monitor thread is the exception: any tqdm bar, even a disabled one, leaves it
    running; it takes tqdm's lock for microseconds every 10 s, and workers never use tqdm.
    """
    from tqdm.std import TMonitor

    settle()
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return False
    main = threading.main_thread()
    return threading.current_thread() is main and all(
        t is main or isinstance(t, TMonitor) for t in threading.enumerate())


def local_mode(n_tasks: int) -> tuple[str, int]:
    """(dask scheduler name, workers) for ``n_tasks`` files on this machine."""
    workers = min(n_tasks, usable_cpus())
    if workers >= 2 and n_tasks >= MIN_FILES_FOR_PROCESSES:
        if _can_fork():
            return "processes", workers
        # spawned workers would re-import everything (seconds) and re-run an unguarded
        # __main__; threads are slower here but always safe
        _log.info("preprocess: other threads are running, so Dask threads instead of forked processes")
    if workers >= 2:
        return "threads", workers
    return "sync", 1


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    class _Bar(tqdm):  # type: ignore[misc,valid-type]
        monitor_interval = 0  # no monitor thread: it would outlive the bar

    return _Bar(total=total, desc="preprocess", unit="file", disable=not progress_enabled(), leave=False)


@contextlib.contextmanager
def _progress(total: int) -> Iterator[None]:
    """A progress bar fed by Dask's local schedulers."""
    from dask.callbacks import Callback

    class _Progress(Callback):  # type: ignore[misc]
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
            bar.update()

    with _bar(total) as bar, _Progress():
        yield


def _distributed(tasks: list[FileTask], cfg: DatasetConfig, shard_root: str, scheduler: str,
                 started: Callable[[], None]) -> list[FileStats]:
    from distributed import Client, as_completed, wait

    with Client(scheduler) as client, _bar(len(tasks)) as bar:
        futures = [client.submit(process_file, t, cfg, shard_root, pure=False) for t in tasks]
        started()
        results = []
        try:
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
        except BaseException:
            # let running tasks end before the caller removes the staging directory
            client.cancel(futures)
            wait(futures, timeout=120)
            raise
        return results


def _die_with_parent(parent: int) -> None:
    """In a pool worker: be killed when the process that forked it dies. After a kill -9
    of ``autopid preprocess`` its workers would otherwise wait on their pipes forever,
    holding memory and open ROOT files (Linux; elsewhere the pool's own shutdown only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _processes(delayed: list[Any], workers: int, started: Callable[[], None]) -> list[FileStats]:
    import dask.multiprocessing

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        # a fork pool starts every worker at its first task: now, before any thread of
        # ours (provenance) exists
        pool.submit(int).result()
        with _progress(len(delayed)):
            started()
            # the get function itself: a scheduler *name* makes Dask import distributed
            # (0.3 s) to look for a default client; one file per hand-out balances the load
            results = dask.compute(*delayed, scheduler=dask.multiprocessing.get, pool=pool, chunksize=1)
    except BaseException:
        # no worker may write into the staging directory once the caller removes it
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # the workers exit while the driver writes the manifest; settle() waits for them
    closing = threading.Thread(target=pool.shutdown, name="autopid-pool-shutdown", daemon=True)
    closing.start()
    _closing.append(closing)
    return list(results)


def _local(tasks: list[FileTask], cfg: DatasetConfig, shard_root: str,
           started: Callable[[], None]) -> list[FileStats]:
    import dask.local
    import dask.threaded

    mode, workers = local_mode(len(tasks))
    delayed = [dask.delayed(process_file, pure=False)(t, cfg, shard_root) for t in tasks]
    if mode == "processes":
        return _processes(delayed, workers, started)
    if mode == "sync":
        with _progress(len(tasks)):
            started()
            return list(dask.compute(*delayed, scheduler=dask.local.get_sync))
    # our own pool: leaving it waits for the tasks still running after a failure, before
    # the caller removes the staging directory
    with ThreadPoolExecutor(workers) as pool, _progress(len(tasks)):
        started()
        return list(dask.compute(*delayed, scheduler=dask.threaded.get, pool=pool))


def run_tasks(tasks: list[FileTask], cfg: DatasetConfig, shard_root: str, scheduler: str | None,
              started: Callable[[], None] = lambda: None) -> list[FileStats]:
    """Run every file task; results in task order. ``started`` is called once the workers
    exist (the driver then has spare time until the results come back). Call
    :func:`settle` when done."""
    if scheduler:
        results = _distributed(tasks, cfg, shard_root, scheduler, started)
    else:
        results = _local(tasks, cfg, shard_root, started)
    return sorted(results, key=lambda s: s.index)
