"""What a physicist would use instead of autopid's models, behind one fit/predict interface.

Every baseline has ``fit(frame, y, *, validation=None) -> self``, ``predict(frame) ->
score`` (higher means more signal-like) and a ``threshold``: its working point, chosen on
validation (MC) when ``validation=(frame, y)`` is given. The classic selections read
frames whose columns are named by role (``PreprocessedDataset.role_frame``), so they work
with any branch names the dataset YAML maps; the learned ones read feature columns.

Names are imported on first use: the classic selections need neither PyTorch nor XGBoost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopid._lazy import lazy_exports

if TYPE_CHECKING:
    from autopid.baselines.ams import ClassicAmsSelection, SecondTrackVeto
    from autopid.baselines.calibration import apply_l1_gains, fit_l1_gains
    from autopid.baselines.learned import MLPImputation, XGBoostBaseline
    from autopid.baselines.nsigma import NSigmaSelection
    from autopid.baselines.roles import missing_roles, role_sample
    from autopid.baselines.tuning import tune_baseline

_WHERE = {
    "ClassicAmsSelection": "ams",
    "SecondTrackVeto": "ams",
    "apply_l1_gains": "calibration",
    "fit_l1_gains": "calibration",
    "MLPImputation": "learned",
    "XGBoostBaseline": "learned",
    "NSigmaSelection": "nsigma",
    "missing_roles": "roles",
    "role_sample": "roles",
    "tune_baseline": "tuning",
}

__all__ = [
    "ClassicAmsSelection",
    "MLPImputation",
    "NSigmaSelection",
    "SecondTrackVeto",
    "XGBoostBaseline",
    "apply_l1_gains",
    "fit_l1_gains",
    "missing_roles",
    "role_sample",
    "tune_baseline",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__, globals())
