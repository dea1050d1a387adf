"""``autopid preprocess``: ROOT files to cached Parquet shards."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "preprocess",
        parents=[common],
        help="select, label, split and normalise ROOT files into a Parquet cache (Dask)",
        description="Read the dataset's ROOT files in parallel chunks with Dask, apply the selection, "
        "label from MC truth, split by (run, event), fit the normalisation on the training split, "
        "and write Parquet shards plus a manifest to a cache keyed by input content and config.",
    )
    p.add_argument("--data", required=True,
                   help="dataset YAML, or a built-in name: alice, ams (files under ./data/<name>)")
    p.add_argument("--cache-dir", default=None,
                   help="cache root (default: $AUTOPID_CACHE_DIR or ~/.cache/autopid)")
    p.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
                   help="distributed scheduler address, e.g. tcp://127.0.0.1:8786 (default: local threads)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache has this entry")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.config import load_dataset_config
    from autopid.preprocess import preprocess

    cfg = load_dataset_config(args.data)
    result = preprocess(cfg, cache_root=args.cache_dir, scheduler=args.scheduler, force=args.force)
    print(result.summary())
    return 0
