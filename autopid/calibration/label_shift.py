"""Label shift without truth: the Data class mix from the model's score, and MC weighted
to it (and to the Data rigidity spectrum) before MC and Data are compared.

MC and Data differ in composition (the simulated Data has Si:P:S:Cl ~ 100:3:16:3, MC is
balanced), so a Data-vs-MC classifier on perfect features still tells the domains apart
by the class mix alone, and a domain head trained on it pushes the features to forget
the class. Both are compared on *class-matched* samples instead: MC rows weighted by
``w = w_R(R) * p_Data(y) / p_MC(y)``, with ``w_R`` the rigidity weights
(:mod:`autopid.calibration.reweight`) and ``p_Data(y)`` estimated without truth:

* ``mlls`` (default): maximum-likelihood label shift (EM of Saerens et al. 2002) on the
  model's score after a Platt recalibration on the validation MC, the estimator that
  arXiv:2003.04475 (Garg et al., "A unified view of label shift estimation") finds
  best in bias and variance; the MC prior is the rigidity-weighted validation MC's;
* ``bbse``: black-box shift estimation with soft predictions (Lipton et al. 2018):
  ``pi = (E_Data[s] - E_MC[s | 0]) / (E_MC[s | 1] - E_MC[s | 0])``.

Both read MC truth and Data scores only, never the hidden Data truth. Under the
remaining covariate shift (resolution, efficiencies) they are approximate; with
simulated Data the evaluation can compare them with the hidden truth.

NumPy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autopid.metrics import domain_classifier_accuracy

EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def platt_fit(score: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, iterations: int = 50
              ) -> tuple[float, float]:
    """``(a, b)`` of ``P(y=1 | s) = sigmoid(a logit(s) + b)`` by weighted Newton steps
    (a small ridge keeps separable samples finite)."""
    z = _logit(score)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
    x = np.stack([z, np.ones_like(z)], axis=1)
    theta = np.array([1.0, 0.0])
    ridge = 1e-3 * max(w.sum(), 1.0) * np.eye(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (w * (p - y)) + ridge @ (theta - np.array([1.0, 0.0]))
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-8:
            break
    return float(theta[0]), float(theta[1])


def estimate_signal_fraction(y_mc: np.ndarray, score_mc: np.ndarray, score_data: np.ndarray, *,
                             mc_weights: np.ndarray | None = None, method: str = "mlls") -> dict[str, Any]:
    """The signal fraction of Data from the model's score (see the module docstring).

    ``y_mc``, ``score_mc``: MC rows (validation: not the ones the model trained on) with
    ``mc_weights`` (rigidity weights; None: 1); ``score_data``: Data rows. Returns
    ``fraction`` (clipped to [0.001, 0.999]), ``mc_fraction`` (weighted) and ``method``.
    """
    y = np.asarray(y_mc, dtype=np.float64)
    s_mc = np.asarray(score_mc, dtype=np.float64)
    s_d = np.asarray(score_data, dtype=np.float64)
    w = np.ones(len(y)) if mc_weights is None else np.asarray(mc_weights, dtype=np.float64)
    pi_mc = float(np.sum(w * y) / max(np.sum(w), 1e-12))
    out: dict[str, Any] = {"method": method, "mc_fraction": pi_mc, "fraction": pi_mc}
    if len(s_d) == 0 or not 0 < pi_mc < 1:
        out["note"] = "no Data rows or one MC class only: no shift estimated"
        return out
    if method == "bbse":
        m1 = float(np.sum(w * y * s_mc) / np.sum(w * y))
        m0 = float(np.sum(w * (1 - y) * s_mc) / np.sum(w * (1 - y)))
        if m1 - m0 < 0.05:
            out["note"] = "the score hardly separates the classes on MC: no shift estimated"
            return out
        pi = (float(np.mean(s_d)) - m0) / (m1 - m0)
    elif method == "mlls":
        a, b = platt_fit(s_mc, y, w)
        p = 1.0 / (1.0 + np.exp(-(a * _logit(s_d) + b)))  # P(y=1 | x) at the MC prior pi_mc
        pi = pi_mc
        for _ in range(500):
            r1, r0 = pi / pi_mc, (1 - pi) / (1 - pi_mc)
            post = r1 * p / (r1 * p + r0 * (1 - p))
            new = float(np.mean(post))
            if abs(new - pi) < 1e-7:
                pi = new
                break
            pi = new
        out["platt"] = [a, b]
    else:
        raise ValueError(f"unknown label-shift method {method!r}; use 'mlls' or 'bbse'")
    out["fraction"] = float(np.clip(pi, 0.001, 0.999))
    return out


def class_matched_weights(y_mc: np.ndarray, data_fraction: float, mc_weights: np.ndarray | None = None
                          ) -> np.ndarray:
    """Per-MC-row weights giving the (rigidity-weighted) MC the Data signal fraction."""
    y = np.asarray(y_mc, dtype=np.float64)
    w = np.ones(len(y)) if mc_weights is None else np.asarray(mc_weights, dtype=np.float64)
    pi_mc = float(np.sum(w * y) / max(np.sum(w), 1e-12))
    if not 0 < pi_mc < 1:
        return w
    return w * np.where(y > 0.5, data_fraction / pi_mc, (1 - data_fraction) / (1 - pi_mc))


def label_weights(y_train: np.ndarray, data_fraction: float, train_weights: np.ndarray | None = None
                  ) -> np.ndarray:
    """``[w_0, w_1]`` = Data class fractions / (weighted) training-MC class fractions, for
    the domain loss of the MC training rows."""
    y = np.asarray(y_train, dtype=np.float64)
    w = np.ones(len(y)) if train_weights is None else np.asarray(train_weights, dtype=np.float64)
    pi = float(np.sum(w * y) / max(np.sum(w), 1e-12))
    if not 0 < pi < 1:
        return np.ones(2)
    return np.clip(np.array([(1 - data_fraction) / (1 - pi), data_fraction / pi]), 0.02, 50.0)


def class_matched_domain_accuracy(mc_features: np.ndarray, data_features: np.ndarray, y_mc: np.ndarray,
                                  data_fraction: float, *, mc_weights: np.ndarray | None = None, seed: int = 0,
                                  max_rows: int = 5000) -> float:
    """Data-vs-MC classifier accuracy on features, with MC weighted to the Data class mix
    ``data_fraction`` and by ``mc_weights`` (rigidity). 0.5: the domains cannot be told
    apart once class mix and spectrum are matched."""
    w = class_matched_weights(y_mc, data_fraction, mc_weights)
    return domain_classifier_accuracy(mc_features, data_features, seed=seed, max_rows=max_rows, mc_weights=w)
