"""Truth-free estimates on Data: the signal efficiency of a selection from template fits.

Promotion guards and Data-side efficiencies use these estimates; the hidden truth of
simulated Data only checks them in reports (:func:`hidden_truth_check`).
"""

from autopid.estimate.data_efficiency import (
    ESTIMATE_ROLES,
    ROLE_PREFIX,
    attach_roles,
    efficiency_gap_estimate,
    estimate_data_efficiency,
    estimate_efficiency,
    hidden_truth_check,
    report_estimate,
    truth_free,
)
from autopid.estimate.template_fit import (
    EfficiencyEstimate,
    fit_l1_mc_shape,
    l1_charge_efficiency,
    tpc_efficiency,
)

__all__ = [
    "ESTIMATE_ROLES", "ROLE_PREFIX", "EfficiencyEstimate", "attach_roles", "efficiency_gap_estimate",
    "estimate_data_efficiency", "estimate_efficiency", "fit_l1_mc_shape", "hidden_truth_check",
    "l1_charge_efficiency", "report_estimate", "tpc_efficiency", "truth_free",
]
