"""The shared ``flock`` helper behind one-search-per-directory and the registry's publish
step: it fails at once or after its timeout, names the holder, and is free again once
released (a holder killed with -9 is covered in test_search_trust and test_registry_once)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from autopid.file_lock import FileLock, LockHeld
from autopid.search.lock import DirectoryInUse, DirectoryLock


def test_a_held_lock_names_its_holder_and_waits_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    with FileLock(path):
        t0 = time.monotonic()
        with pytest.raises(LockHeld) as err:
            FileLock(path, timeout_s=0.3).acquire()
        assert time.monotonic() - t0 >= 0.3
        assert f"pid {os.getpid()}" in err.value.holder and err.value.path == path
        with pytest.raises(LockHeld):
            FileLock(path).acquire()  # timeout 0: at once
    with FileLock(path, timeout_s=0.3):  # released: free again
        pass


def test_a_second_search_in_a_directory_is_refused(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path, "search"):
        with pytest.raises(DirectoryInUse, match=f"another search is running in this directory .pid {os.getpid()}"):
            DirectoryLock(tmp_path, "search").acquire()
    DirectoryLock(tmp_path).acquire().release()
