"""Truth-free resolution smearing: MC tracker charges given the Data charge resolution.

Data measures the layer charges less precisely than MC (in the AMS-like simulation the
charge resolution is 15 % wider), which no gain fixes: after the gain calibration the
main track's layer charges are what a Data-vs-MC classifier reads first. Experiments
smear MC to the resolution measured in Data; autopid does the same, without truth:

* the width of a (layer, side) is that of its calibrated charge over the event's
  calibrated truncated mean (a ratio the species hardly moves), from the lower side of
  its peak (fragments and delta rays push the ratios up, not down), on each domain's
  train split (:func:`autopid.calibration.gains.fit_resolution_smearing`);
* MC rows get Gaussian noise of ``sigma_MC * sqrt(r^2 - 1)`` on that (layer, side), r the
  Data/MC width ratio and sigma_MC in charge units at MC's median truncated mean, where
  r > 1 (a resolution can be worsened, not improved), scaled up for the share of the
  added noise that the truncated mean takes back (1/(2k) of it, k layers of 2 sides);
* the draw of a row is a function of its raw charges (a hash, as for the noise overlay)
  and the column's name, so an event gets the same charges in training, evaluation and
  inference.

Only the main track's charges are smeared; the part of the resolution common to all
layers of a track is matched only on average. NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from autopid.calibration.noise import ColumnDraws, SeedKeys, column_salt, uniforms


def normal_draws(keys: np.ndarray, salt_name: str) -> np.ndarray:
    """A standard normal deviate per key (Box-Muller on two hashed uniforms), a function
    of ``(key, salt_name)`` only."""
    u1 = 1.0 - uniforms(keys, column_salt("normal-1:" + salt_name))  # (0, 1]: the log is finite
    u2 = uniforms(keys, column_salt("normal-2:" + salt_name))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class ResolutionSmearing(ColumnDraws):
    """Per charge column the width of the Gaussian noise added to MC rows (calibrated scale)."""

    KIND = "resolution_smearing"

    def noise(self, cols: Mapping[str, np.ndarray], mc_rows: np.ndarray | slice,
              seeds: SeedKeys | None = None) -> dict[str, np.ndarray]:
        """Per smeared column present in ``cols``, the noise to add to the rows ``mc_rows``
        (one value per such row)."""
        present = self.present(cols)
        if not present:
            return {}
        keys = (seeds or SeedKeys(cols)).get(self.key_columns, "resolution smearing")[mc_rows]
        return {c: self.extra[c] * normal_draws(keys, "smear:" + c) for c in present}
