"""Helpers for tests of the retraining: tiny job files and search spaces on simulated data,
and races of real processes on a state database (SQLite or PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from autopid.retrain.job import RetrainJob, load_job

TINY_MDA = {"token_channels": 16, "gnn_hidden": 16, "gnn_layers": 1, "cnn_channels": 4, "mlp_hidden": 16,
            "classifier_channels": 16}


def write_tiny_space(path: str | Path, *, lr: tuple[float, float] = (5e-4, 3e-3), trials: int = 1) -> Path:
    """An MDA space small enough for a test: one epoch, a few thousand rows, 1-2 params."""
    space = {
        "name": "tiny-mda",
        "base": {"dataset": "ams", "species": "phosphorus", "model": {"family": "mda", "params": dict(TINY_MDA)},
                 "training": {"epochs": 1, "batch_size": 128, "lr": 1e-3, "lambda_max": 0.3, "signal_fraction": 0.5,
                              "max_train_rows": 1500, "max_eval_rows": 600, "threads": 1},
                 "scaling": {"num_workers": 1, "cpus_per_worker": 1}},
        "studies": [{"species": "phosphorus", "period": "P0"}],
        "params": {"model.params.gnn_hidden": {"type": "categorical", "choices": [16, 32]},
                   "training.lr": {"type": "loguniform", "low": lr[0], "high": lr[1]}},
        "budget": {"num_samples": trials},
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def write_job(path: str | Path, *, data_root: str | Path, dataset: str | Path, space: str | Path, work: str | Path,
              name: str = "tiny-ams", **over: Any) -> Path:
    """A job file for the AMS-like phosphorus selection on data under ``data_root``."""
    work = Path(work)
    job: dict[str, Any] = {
        "name": name, "experiment": "ams", "species": "phosphorus", "family": "mda",
        "periods": {"pattern": f"{data_root}/{{period}}"},
        "dataset": str(dataset), "cache_dir": str(work / "cache"),
        "schedule": {"every_s": 3600},
        "search": {"space": str(space), "trials": 1},
        "promotion": {"metric": "mc.auc", "margin": 0.0, "max_eval_rows": 2000},
        "registry": str(work / "registry"),
        "state": {"work_dir": str(work / "state")},
        "retry": {"max_attempts": 3, "backoff_s": 0.3, "backoff_factor": 2.0},
        "lease": {"duration_s": 4.0, "heartbeat_s": 1.0},
    }
    for key, value in over.items():
        job[key] = value
    path = Path(path)
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def tiny_job(path: str | Path, **kwargs: Any) -> RetrainJob:
    return load_job(write_job(path, **kwargs))


_CREATOR = textwrap.dedent("""
    import sys, time
    url, start, me = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    from autopid.retrain.state import StateStore
    while time.time() < start:
        time.sleep(0.001)
    store = StateStore(url)  # creates the tables on a fresh database
    store.seen("job", me)
    print(me)
""")

_RACER = textwrap.dedent("""
    import sys, time
    from autopid.retrain.state import StateStore
    url, owner, start, periods = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(",")
    store = StateStore(url)
    while time.time() < start:
        time.sleep(0.001)
    won = [p for p in periods if store.claim("job", p, owner, 60) is not None]
    print(",".join(won))
""")


def race_table_creation(urls: list[str], processes: int = 5, lead_s: float = 4.0) -> None:
    """``processes`` real processes open each fresh database ``urls`` at the same moment;
    every one must succeed and find the tables (AssertionError otherwise)."""
    from autopid.retrain.state import StateStore

    for url in urls:
        start = time.time() + lead_s  # every process is up and waiting before the race starts
        procs = [subprocess.Popen([sys.executable, "-c", _CREATOR, url, str(start), f"P{i}"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(processes)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o, p in zip(outs, procs) if p.returncode]
        assert sorted(r.period for r in StateStore(url).all_runs("job")) == sorted(f"P{i}" for i in range(processes))


def race_claims(store: Any, processes: int = 4, periods: int = 8, lead_s: float = 4.0) -> None:
    """``processes`` real processes claim the same ``periods`` rows of ``store`` at once:
    each period must be claimed exactly once (AssertionError otherwise)."""
    from autopid.retrain.state import RUNNING

    names = [f"P{i}" for i in range(periods)]
    for p in names:
        store.seen("job", p)
    start = time.time() + lead_s
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, store.url, f"racer{i}", str(start), ",".join(names)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    won = [w for out, _ in outs for w in out.strip().split(",") if w]
    assert sorted(won) == sorted(names), won  # each period claimed exactly once
    for p in names:
        row = store.get("job", p)
        assert row is not None and row.status == RUNNING and row.attempts == 1
    claims = [e for e in store.events("job") if e["kind"] in ("claimed", "takeover")]
    assert len(claims) == len(names)
