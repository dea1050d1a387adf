"""Physics metrics used by training, search, retraining and reports.

Scores are "higher = more signal-like". Background rejection is quoted as ``1/eps_B``
(with ``eps_B`` given too) at a fixed signal efficiency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def efficiency_purity_f1(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Signal efficiency (recall), purity (precision) and F1 of ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    sel = np.asarray(score) >= threshold
    tp = float((sel & y).sum())
    eff = tp / max(float(y.sum()), 1.0)
    pur = tp / float(sel.sum()) if sel.any() else 0.0
    f1 = 2 * eff * pur / (eff + pur) if eff + pur > 0 else 0.0
    return {"efficiency": eff, "purity": pur, "f1": f1, "threshold": float(threshold)}


def best_f1_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The cut that maximises F1 (choose it on validation data, apply it on test data)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score), kind="stable")
    s, t = np.asarray(score)[order], y[order]
    tp = np.cumsum(t)
    n_sel = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (n_sel + t.sum())
    # only cut between distinct scores
    last = np.r_[s[1:] != s[:-1], True]
    i = int(np.argmax(np.where(last, f1, -1)))
    return float(s[i])


def threshold_at_efficiency(y: np.ndarray, score: np.ndarray, efficiency: float) -> float:
    sig = np.sort(np.asarray(score)[np.asarray(y).astype(bool)])
    if sig.size == 0:
        return float("nan")
    # the highest cut that keeps at least the requested fraction of signal
    k = min(max(int(np.ceil(efficiency * sig.size - 1e-9)), 1), sig.size)
    return float(sig[sig.size - k])


def background_rejection(y: np.ndarray, score: np.ndarray, efficiency: float) -> dict[str, float]:
    """Background efficiency and rejection ``1/eps_B`` at a signal efficiency."""
    cut = threshold_at_efficiency(y, score, efficiency)
    bkg = np.asarray(score)[~np.asarray(y).astype(bool)]
    eps_b = float((bkg >= cut).mean()) if bkg.size else float("nan")
    return {"signal_efficiency": efficiency, "threshold": cut, "background_efficiency": eps_b,
            "rejection": (1.0 / eps_b) if eps_b > 0 else float("inf")}


def binned(
    metric: Callable[[np.ndarray, np.ndarray], Any],
    y: np.ndarray,
    score: np.ndarray,
    variable: np.ndarray,
    edges: Sequence[float],
) -> list[dict[str, Any]]:
    """``metric(y, score)`` in bins of ``variable`` (p, rigidity)."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (variable >= lo) & (variable < hi)
        n_sig = int(np.asarray(y)[m].sum())
        value = metric(np.asarray(y)[m], np.asarray(score)[m]) if m.sum() > 0 else float("nan")
        out.append({"low": float(lo), "high": float(hi), "n": int(m.sum()), "n_signal": n_sig, "value": value})
    return out


def domain_classifier_accuracy(mc_features: np.ndarray, data_features: np.ndarray, *, seed: int = 0,
                               max_rows: int = 5000) -> float:
    """Held-out accuracy of a small classifier telling Data from MC on frozen features.

    0.5 means the features cannot tell the domains apart. Both domains are subsampled to
    the same size, so a constant guess scores 0.5.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(mc_features), len(data_features), max_rows)
    if n < 20:
        return float("nan")
    a = mc_features[rng.choice(len(mc_features), n, replace=False)]
    b = data_features[rng.choice(len(data_features), n, replace=False)]
    x = np.nan_to_num(np.concatenate([a, b]).astype(np.float64))
    d = np.r_[np.zeros(n), np.ones(n)]
    x_tr, x_te, d_tr, d_te = train_test_split(x, d, test_size=0.5, random_state=seed, stratify=d)
    scaler = StandardScaler().fit(x_tr)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, early_stopping=True, random_state=seed)
    clf.fit(scaler.transform(x_tr), d_tr)
    return float(clf.score(scaler.transform(x_te), d_te))


def efficiency_gap(y_mc: np.ndarray, score_mc: np.ndarray, y_data_hidden: np.ndarray, score_data: np.ndarray,
                   threshold: float) -> dict[str, float]:
    """Signal efficiency on MC and on simulated Data at one cut, and their difference.

    ``y_data_hidden`` is the hidden truth of simulated Data: evaluation only.
    """
    eff_mc = efficiency_purity_f1(y_mc, score_mc, threshold)["efficiency"]
    eff_data = efficiency_purity_f1(y_data_hidden, score_data, threshold)["efficiency"]
    return {"efficiency_mc": eff_mc, "efficiency_data": eff_data, "gap": eff_mc - eff_data}
