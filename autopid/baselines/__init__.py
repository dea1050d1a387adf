"""What a physicist would use instead of autopid's models, behind one fit/predict interface.

Every baseline has ``fit(frame, y) -> self``, ``predict(frame) -> score`` (higher means
more signal-like) and a ``threshold`` for its standard selection. ``frame`` holds the
raw (un-normalised) columns of the preprocessed cache.
"""

from __future__ import annotations

from autopid.baselines.cuts import L1ChargeCut, NSigmaSelection
from autopid.baselines.learned import MLPImputation, XGBoostBaseline

__all__ = ["L1ChargeCut", "MLPImputation", "NSigmaSelection", "XGBoostBaseline"]
