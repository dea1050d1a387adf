"""Extended maximum-likelihood fit of a mixture with shared shape and per-block yields.

The data come in *blocks* (e.g. the rows that pass a selection and the rows that fail
it, possibly per momentum bin). Every block has its own yields, one per component; the
shape parameters ``theta`` are shared by all blocks. ``density(theta)`` returns, per
block, the matrix ``D[i, k]`` of component ``k``'s normalised density at row ``i``.

Negative log-likelihood: ``sum_b [ sum_k Y_bk - sum_i log(sum_k Y_bk D_b[i, k]) ]``.
Yields are fitted in units of the block size (better conditioned), with an analytic
gradient; the shape gradient is a central finite difference. The covariance is the
inverse of a finite-difference Hessian at the minimum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DensityFn = Callable[[np.ndarray], list[np.ndarray]]
_TINY = 1e-300


@dataclass
class MixtureFit:
    theta: np.ndarray  # shape parameters
    yields: list[np.ndarray]  # per block, events per component
    cov: np.ndarray  # covariance of [theta, yields of block 0, block 1, ...] (yields in events)
    nll: float
    converged: bool
    message: str

    def yield_index(self, block: int, component: int) -> int:
        """Index of ``yields[block][component]`` in the covariance."""
        return len(self.theta) + sum(len(y) for y in self.yields[:block]) + component


def _em(d: np.ndarray, y: np.ndarray, w: np.ndarray | None, *, max_iter: int, tol: float = 1e-9) -> np.ndarray:
    """Yields maximising the extended likelihood of one block at fixed densities ``d``."""
    if not len(d):
        return np.zeros_like(y)
    y = np.maximum(y, 1e-6)
    n = float(len(d)) if w is None else float(w.sum())
    prev = np.inf
    for _ in range(max_iter):
        lik = np.maximum(d @ y, _TINY)
        r = 1.0 / lik if w is None else w / lik
        y = y * (d.T @ r)
        value = float(y.sum() - (np.log(lik) if w is None else w * np.log(lik)).sum())
        if abs(prev - value) < tol * n:
            break
        prev = value
    return y


def fit_mixture(density: DensityFn, sizes: Sequence[int], n_components: Sequence[int], theta0: Sequence[float],
                theta_bounds: Sequence[tuple[float, float]], yields0: Sequence[np.ndarray] | None = None,
                weights: Sequence[np.ndarray | None] | None = None,
                *, maxiter: int = 200, em_iter: int = 2000) -> MixtureFit:
    """Fit; ``sizes[b]`` is the number of rows of block ``b`` (the sum of its weights),
    ``n_components[b]`` its components; ``weights[b]`` (optional) the count of each row
    (a binned fit: one row per bin)."""
    from scipy.optimize import minimize

    n_theta = len(theta0)
    ws: list[np.ndarray | None] = list(weights) if weights is not None else [None] * len(sizes)
    sizes_a = np.maximum(np.asarray(sizes, dtype=np.float64), 1.0)
    splits = np.cumsum([0, *n_components])
    scale = np.concatenate([np.full(k, s) for k, s in zip(n_components, sizes_a)])

    def unpack(par: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        y = par[n_theta:] * scale
        return par[:n_theta], [y[splits[b]:splits[b + 1]] for b in range(len(n_components))]

    def nll_of(theta: np.ndarray, ys: list[np.ndarray], mats: list[np.ndarray] | None = None) -> float:
        mats = density(theta) if mats is None else mats
        total = 0.0
        for d, y, w in zip(mats, ys, ws):
            total += float(y.sum())
            if len(d):
                ll = np.log(np.maximum(d @ y, _TINY))
                total -= float(ll.sum() if w is None else (w * ll).sum())
        return total

    steps = np.array([max(1e-5, 1e-4 * (hi - lo)) for lo, hi in theta_bounds])

    def fun(par: np.ndarray) -> tuple[float, np.ndarray]:
        theta, ys = unpack(par)
        mats = density(theta)
        value = nll_of(theta, ys, mats)
        grad = np.empty_like(par)
        for j in range(n_theta):
            up, down = theta.copy(), theta.copy()
            up[j] = min(theta[j] + steps[j], theta_bounds[j][1])
            down[j] = max(theta[j] - steps[j], theta_bounds[j][0])
            grad[j] = (nll_of(up, ys) - nll_of(down, ys)) / max(up[j] - down[j], 1e-12)
        g_y = []
        for d, y, w in zip(mats, ys, ws):
            if len(d):
                lik = np.maximum(d @ y, _TINY)
                g_y.append(1.0 - d.T @ (1.0 / lik if w is None else w / lik))
            else:
                g_y.append(np.ones(len(y)))
        grad[n_theta:] = np.concatenate(g_y) * scale
        return value, grad

    if yields0 is None:
        yields0 = [np.full(k, s / max(k, 1)) for k, s in zip(n_components, sizes_a)]
    state = {"ys": [np.maximum(np.asarray(y, dtype=np.float64), 1e-3) for y in yields0]}

    def profile(theta: np.ndarray) -> float:
        """The NLL minimised over the yields at fixed shape (EM, warm-started)."""
        mats = density(np.asarray(theta, dtype=np.float64))
        ys = [_em(d, y, w, max_iter=em_iter) for d, y, w in zip(mats, state["ys"], ws)]
        state["ys"] = ys
        return nll_of(theta, ys, mats)

    def profile_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value = profile(theta)
        at_theta = state["ys"]
        g = np.empty(n_theta)
        for j in range(n_theta):  # forward differences (backward at the upper bound)
            other = theta.copy()
            h = steps[j] if theta[j] + steps[j] <= theta_bounds[j][1] else -steps[j]
            other[j] = theta[j] + h
            g[j] = (profile(other) - value) / h
            state["ys"] = at_theta  # every difference starts from the yields at theta
        return value, g

    res = minimize(profile_grad, np.asarray(theta0, dtype=np.float64), jac=True, method="L-BFGS-B",
                   bounds=list(theta_bounds), options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-6})
    final = profile(res.x)
    par = np.concatenate([res.x, np.concatenate(state["ys"]) / scale])
    res_fun, res_success, res_message = final, bool(res.success), str(res.message)
    # Hessian of the NLL in the natural units (theta, events): the yield block analytic
    # (sum_i D_ik D_il / L_i^2 per block), the shape rows by central differences of the gradient
    nat_scale = np.concatenate([np.ones(n_theta), scale])
    n = len(par)
    hess = np.zeros((n, n))
    theta, ys = unpack(par)
    for b, (d, y, w) in enumerate(zip(density(theta), ys, ws)):
        if len(d):
            q = d / np.maximum(d @ y, _TINY)[:, None]
            lo_, hi_ = n_theta + splits[b], n_theta + splits[b + 1]
            hess[lo_:hi_, lo_:hi_] = (q.T @ (q if w is None else q * w[:, None])) * np.outer(scale[splits[b]:splits[b + 1]], scale[splits[b]:splits[b + 1]])
    for j in range(n_theta):
        up, down = par.copy(), par.copy()
        up[j] = min(par[j] + steps[j], theta_bounds[j][1])
        down[j] = max(par[j] - steps[j], theta_bounds[j][0])
        row = (fun(up)[1] - fun(down)[1]) / max(up[j] - down[j], 1e-12)
        hess[j, :] = row
        hess[:, j] = row
    hess[:n_theta, :n_theta] = 0.5 * (hess[:n_theta, :n_theta] + hess[:n_theta, :n_theta].T)
    hess = hess / np.outer(nat_scale, nat_scale)
    if not np.all(np.isfinite(hess)):
        hess = np.where(np.isfinite(hess), hess, 0.0)
    # a component no row supports (zero yield, zero density everywhere) has no curvature:
    # keep it out of the inversion (variance 0) instead of letting it poison the rest
    diag = np.diag(hess)
    active = diag > 1e-12 * max(float(np.max(np.abs(diag))), 1e-300)
    # a shape parameter stuck at a bound is held fixed there (e.g. a tail fraction of 0
    # leaves the tail width undetermined): out of the inversion too
    for j, (lo_b, hi_b) in enumerate(theta_bounds):
        tol_b = 1e-6 * (hi_b - lo_b)
        if par[j] <= lo_b + tol_b or par[j] >= hi_b - tol_b:
            active[j] = False
    # so is a yield at its bound 0 (one-sided: the binomial floor of the ratios covers it)
    active[n_theta:] &= par[n_theta:] * scale > 1e-6
    cov = np.zeros_like(hess)
    sub = hess[np.ix_(active, active)]
    try:
        inv = np.linalg.inv(sub)
        if not np.all(np.isfinite(inv)) or np.any(np.diag(inv) < 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(sub, hermitian=True)
    cov[np.ix_(active, active)] = inv
    theta, ys = unpack(par)
    return MixtureFit(theta, ys, cov, float(res_fun), res_success, res_message)


def linear_ratio(fit: MixtureFit, numerator: Mapping[tuple[int, int], float],
                 denominator: Mapping[tuple[int, int], float]) -> tuple[float, float]:
    """``(sum c_i Y_i) / (sum d_j Y_j)`` over (block, component) yields, with the error
    from the fit covariance."""
    a = sum(c * fit.yields[b][k] for (b, k), c in numerator.items())
    d = sum(c * fit.yields[b][k] for (b, k), c in denominator.items())
    if not d > 1e-9 or not np.isfinite(a):
        return float("nan"), float("nan")
    grad = np.zeros(fit.cov.shape[0])
    for (b, k), c in numerator.items():
        grad[fit.yield_index(b, k)] += c / d
    for (b, k), c in denominator.items():
        grad[fit.yield_index(b, k)] -= c * a / d**2
    var = float(grad @ fit.cov @ grad)
    return float(a / d), float(np.sqrt(var)) if np.isfinite(var) and var > 0 else 0.0


def ratio_with_error(fit: MixtureFit, numerator: Sequence[tuple[int, int]], denominator_extra: Sequence[tuple[int, int]]
                     ) -> tuple[float, float]:
    """``a / (a + b)`` with ``a`` the sum of the (block, component) yields in ``numerator``
    and ``b`` that of ``denominator_extra``; the error from the fit covariance, never
    below the binomial error of the fitted signal count (about 1/N at 0 or 1)."""
    num = {key: 1.0 for key in numerator}
    den = {**num, **{key: 1.0 for key in denominator_extra}}
    eff, err = linear_ratio(fit, num, den)
    tot = sum(fit.yields[b][k] for b, k in den)
    if not np.isfinite(eff):
        return eff, err
    n = max(tot, 1.0)
    var = max(err * err, max(eff * (1.0 - eff), 1.0 / n) / n)  # at eff = 0 or 1: about 1/N
    return eff, float(np.sqrt(var))
