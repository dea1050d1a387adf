"""A kill -9 leaves autopid's private Ray temp dir behind; the next start removes it, and
only it: never a live instance's dir, another tool's, or one whose pid was reused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from autopid import ray_local


def _owned(root: Path, name: str, owner: object | None) -> Path:
    d = root / f"autopid-ray-{name}"
    d.mkdir()
    (d / "session_latest").mkdir()
    if owner is not None:
        (d / "autopid-owner.json").write_text(owner if isinstance(owner, str) else json.dumps(owner))
    return d


def test_sweep_removes_only_dirs_whose_owner_is_gone(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = _owned(tmp_path, "dead", {"pid": int(done.stdout), "start": "1"})
    me = _owned(tmp_path, "live", {"pid": os.getpid(), "start": ray_local._process_start(os.getpid())})
    parent = _owned(tmp_path, "parent", {"pid": os.getppid(), "start": ray_local._process_start(os.getppid())})
    reused = _owned(tmp_path, "reused", {"pid": os.getppid(), "start": "not-its-start"})
    bare = _owned(tmp_path, "bare", None)  # another tool's, or being created
    torn = _owned(tmp_path, "torn", '{"pid": 12')  # an owner record being written
    other = tmp_path / "someone-else-dead"
    other.mkdir()
    (other / "autopid-owner.json").write_text(json.dumps({"pid": int(done.stdout)}))
    removed = set(ray_local.sweep_stale(tmp_path))
    expect_reused = {reused} if ray_local._process_start(os.getppid()) is not None else set()
    assert removed == {dead} | expect_reused
    for kept in (me, parent, bare, torn, other):
        assert kept.exists()


@pytest.mark.slow
def test_a_killed_search_process_leaves_a_dir_the_next_start_removes() -> None:
    root = Path(tempfile.mkdtemp(prefix="apsw"))  # short: Ray's socket paths live under it
    script = textwrap.dedent("""
        import sys, time
        from autopid import ray_local
        ray_local.start_or_attach(num_cpus=1, log_to_driver=False)
        print(ray_local.temp_dir(), flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "TMPDIR": str(root)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        left = Path(proc.stdout.readline().strip())
        assert left.parent == root and (left / "autopid-owner.json").exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert left.exists()  # nothing could clean up
        deadline = time.monotonic() + 30
        while left.exists() and time.monotonic() < deadline:
            ray_local.sweep_stale(root)
            time.sleep(0.5)
        assert not left.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        for d in root.glob("*"):
            subprocess.run(["rm", "-rf", str(d)], check=False)
        root.rmdir()
