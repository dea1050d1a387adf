"""Preprocessing of ROOT trees into cached Parquet shards, with Dask."""

from __future__ import annotations

from autopid.preprocess.cache import default_cache_root
from autopid.preprocess.pipeline import PreprocessResult, preprocess

__all__ = ["PreprocessResult", "default_cache_root", "preprocess"]
