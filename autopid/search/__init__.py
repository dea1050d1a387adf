"""Hyperparameter search on Ray Tune with Optuna (TPE) and ASHA."""

from __future__ import annotations

from autopid.search.space import SearchSpace, load_search_space

__all__ = ["SearchSpace", "load_search_space"]
