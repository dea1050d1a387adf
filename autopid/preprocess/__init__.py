"""Preprocessing of ROOT trees (TTree or RNTuple) into cached Parquet shards, with Dask."""

from __future__ import annotations

from autopid.preprocess._read import Tree, open_tree
from autopid.preprocess.cache import default_cache_root
from autopid.preprocess.pipeline import PreprocessResult, preprocess

__all__ = ["PreprocessResult", "Tree", "default_cache_root", "open_tree", "preprocess"]
