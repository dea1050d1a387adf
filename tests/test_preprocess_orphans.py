"""kill -9 of a preprocessing process must not leave its forked pool workers behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")

# a parent that starts a fork pool the way autopid.preprocess does, prints the workers'
# pids, then dies by SIGKILL (no cleanup of any kind runs)
PARENT = """
import multiprocessing, os, signal, time
from concurrent.futures import ProcessPoolExecutor
from autopid.preprocess._schedule import _die_with_parent
pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"),
                           initializer=_die_with_parent, initargs=(os.getpid(),))
pids = sorted({f.result() for f in [pool.submit(os.getpid) for _ in range(8)]})
print(" ".join(map(str, pids)), flush=True)
pool.submit(time.sleep, 60)  # a worker busy with a file when the parent dies
time.sleep(0.5)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_pool_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    # output to a file, not a pipe: workers that outlive the parent would hold a pipe open
    out = tmp_path / "pids.txt"
    with out.open("w") as f:
        rc = subprocess.run([sys.executable, "-c", PARENT], stdout=f, stderr=subprocess.STDOUT, timeout=120).returncode
    assert rc == -9, out.read_text()[-2000:]
    pids = [int(p) for p in out.read_text().split()]
    assert pids and os.getpid() not in pids
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, 9)
    assert not left, f"pool workers outlived their parent: {left}"
