"""Local scheduling: forked Dask processes with 4 files or more, threads below; both
write the same cache entry, errors cross the process boundary, and a run leaves no
thread behind to spoil the next fork."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autopid.config.dataset import DatasetConfig
from autopid.preprocess import _schedule
from autopid.testing import write_dataset_yaml

# in a fresh interpreter: tests run before may have left threads (a Dask cluster, Ray)
# that make an in-process run fall back to threads
_SCRIPT = r"""
import json, sys, threading
import pandas as pd
from autopid.config import load_dataset_config
from autopid.data import PreprocessedDataset
from autopid.errors import InputError
from autopid.preprocess import _schedule, preprocess

cfg, root = load_dataset_config(sys.argv[1]), sys.argv[2]
_schedule.usable_cpus = lambda: 2
modes = []
real = _schedule.local_mode
_schedule.local_mode = lambda n: modes.append(real(n)[0]) or real(n)
forked = preprocess(cfg, cache_root=root + "/p")
threads_left = threading.active_count()
_schedule.MIN_FILES_FOR_PROCESSES = 10**6
threaded = preprocess(cfg, cache_root=root + "/t")
a, b = PreprocessedDataset(forked.path), PreprocessedDataset(threaded.path)
for split in ("train", "validation", "test"):
    for domain in ("mc", "data"):
        pd.testing.assert_frame_equal(a.frame(split, domain), b.frame(split, domain))
_schedule.MIN_FILES_FOR_PROCESSES = 4
try:
    preprocess(cfg.model_copy(update={"features": [*cfg.features, "fNope"]}), cache_root=root + "/e")
    error = None
except InputError as exc:
    error = str(exc)
print(json.dumps({"modes": modes, "threads_left": threads_left, "same": forked.manifest == threaded.manifest,
                  "error": error}))
"""


def test_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_schedule, "usable_cpus", lambda: 2)
    monkeypatch.setattr(_schedule, "_can_fork", lambda: True)
    assert _schedule.local_mode(1) == ("sync", 1)
    assert _schedule.local_mode(3) == ("threads", 2)
    assert _schedule.local_mode(4) == ("processes", 2)
    monkeypatch.setattr(_schedule, "_can_fork", lambda: False)  # another thread is running
    assert _schedule.local_mode(4) == ("threads", 2)
    monkeypatch.setattr(_schedule, "usable_cpus", lambda: 1)
    assert _schedule.local_mode(8) == ("sync", 1)


def test_processes_and_threads_write_the_same_entry(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    cfg = write_dataset_yaml(alice_cfg, tmp_path / "alice.yaml")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(cfg), str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["modes"] == ["processes", "threads", "processes"]
    assert got["threads_left"] == 1, "a run must not leave threads behind"
    assert got["same"]
    # raised in a forked worker, told in the driver
    assert got["error"] and ".root:O2pidtracks: no branch 'fNope'" in got["error"]


def test_package_versions_are_looked_up_once_per_process() -> None:
    from autopid import provenance

    first = provenance.package_versions()
    first["numpy"] = "changed by a caller"
    before = provenance._package_versions.cache_info().misses
    again = provenance.package_versions()
    assert provenance._package_versions.cache_info().misses == before  # no second scan
    assert again["numpy"] != "changed by a caller" and again["python"]
