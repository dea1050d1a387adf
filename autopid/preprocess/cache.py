"""The preprocessing cache: keyed by input content and configuration, published atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from autopid.provenance import atomic_write_text, sha256_file

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


def default_cache_root() -> Path:
    """``$AUTOPID_CACHE_DIR``, else ``$XDG_CACHE_HOME/autopid``, else ``~/.cache/autopid``."""
    env = os.environ.get("AUTOPID_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "autopid"


def file_hashes(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """sha256 of each file, remembered by (size, mtime) so a cache hit does not re-read them."""
    memo_path = root / "file-hashes.json"
    try:
        memo: dict[str, list[Any]] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out: dict[str, str] = {}
    todo: list[tuple[Path, str, os.stat_result]] = []
    for path in paths:
        key = str(path.resolve())
        st = path.stat()
        hit = memo.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            out[str(path)] = hit[2]
        else:
            todo.append((path, key, st))
    if todo:
        # hashlib lets go of the GIL on large blocks: threads hash files side by side
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            digests = pool.map(sha256_file, [path for path, _, _ in todo])
            for (path, key, st), digest in zip(todo, digests):
                memo[key] = [st.st_size, st.st_mtime_ns, digest]
                out[str(path)] = digest
        atomic_write_text(memo_path, json.dumps(memo))
    return out


def cache_key(config_json: str, input_hashes: Iterable[tuple[str, str, str]]) -> str:
    """Key from the config and (domain, tree, sha256) of the inputs, not their paths."""
    h = hashlib.sha256()
    h.update(f"autopid-preprocess-v{CACHE_FORMAT}\n".encode())
    h.update(config_json.encode())
    for item in sorted(input_hashes):
        h.update("\n".join(item).encode())
    return h.hexdigest()


STAGING_PREFIX = ".staging-"


def staging_dir(root: Path, key: str) -> Path:
    """A private directory to build an entry in; invisible to readers (leading dot). Its
    name carries its owner (pid, start time, host): the next preprocessing in this cache
    removes it at once if that process is gone (killed mid-build)."""
    from autopid.owned_dirs import make_owned_dir

    remove_stale(root)
    return make_owned_dir(root, STAGING_PREFIX)


def remove_stale(root: Path) -> list[Path]:
    """Remove staging directories of preprocessing runs that were killed."""
    from autopid.owned_dirs import remove_stale_dirs

    return remove_stale_dirs(root, (STAGING_PREFIX,))


def publish(staging: Path, final: Path) -> Path:
    """Move a finished entry into place; if another process won the race, keep theirs."""
    try:
        os.rename(staging, final)
    except OSError:
        if (final / MANIFEST).is_file():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            raise
    return final


def read_manifest(entry: Path) -> dict[str, Any] | None:
    path = entry / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
