"""Calibrate, reweight, then adapt: what the MDA path does to MC and Data before a
domain-adversarial head sees them.

* :mod:`.gains` — truth-free tracker charge gain maps per domain (layer, side, x bin),
  fitted on each domain's train split, stored with the model (JSON) and applied in
  training, evaluation and inference alike;
* :mod:`.reweight` — MC-to-Data rigidity weights (density ratio in ``log10 |R|``);
* :mod:`.label_shift` — the Data class mix estimated from the model's score without
  truth, MC weighted to it, and the class-matched Data-vs-MC classifier accuracy.

NumPy only at import (inference imports :mod:`.gains`).
"""

from autopid.calibration.gains import (
           ChargeCalibration,
           GainMap,
           fit_charge_calibration,
           fit_gain_map,
)
from autopid.calibration.reweight import RigidityReweighter, rigidity_column

__all__ = ["ChargeCalibration", "GainMap", "RigidityReweighter", "fit_charge_calibration", "fit_gain_map",
           "rigidity_column"]
