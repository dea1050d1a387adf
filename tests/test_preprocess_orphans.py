"""kill -9 of a preprocessing process must not leave its forked pool workers behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")

# a parent that runs two file tasks on autopid's process pool (the path of 4+ files), each
# recording its worker's pid and then busy with its "file"; once both run, the parent dies
# by SIGKILL: no cleanup of any kind runs
PARENT = """
import os, sys, threading, time
import dask
from autopid.preprocess._schedule import _processes

pids = sys.argv[1]

def task(i):
    with open(pids, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(120)

def kill_when_both_run():
    while not os.path.exists(pids) or len(open(pids).read().split()) < 2:
        time.sleep(0.05)
    os.kill(os.getpid(), 9)

threading.Thread(target=kill_when_both_run, daemon=True).start()
_processes([dask.delayed(task)(i) for i in range(2)], 2, lambda: None)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_pool_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.txt"
    # output to a file, not a pipe: workers that outlive the parent would hold a pipe open
    with (tmp_path / "out.txt").open("w") as f:
        rc = subprocess.run([sys.executable, "-c", PARENT, str(pid_file)], stdout=f, stderr=subprocess.STDOUT,
                            timeout=120).returncode
    assert rc == -9, (tmp_path / "out.txt").read_text()[-2000:]
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, 9)
    assert not left, f"pool workers outlived their parent: {left}"
