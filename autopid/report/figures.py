"""PNG figures of a report, drawn with matplotlib's Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` on an explicit Agg canvas rather than
through pyplot: nothing global changes (no backend switch under a user's notebook, no
figure manager to leak figures), and no display is ever needed. mplhep's HEP style is
applied when it is installed (it is optional).

Every Data-side figure that uses the hidden truth of simulated Data says so in its title:
"hidden truth (evaluation only)".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HIDDEN = "hidden truth (evaluation only)"
KIN_LABEL = {"fP": "p (GeV/c)", "rig_inner": "rigidity R (GV)"}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    try:
        import mplhep  # optional: HEP styling when present

        style: Any = mplhep.style.ROOT
    except Exception:  # not installed, or an mplhep without .style.ROOT
        style = {"axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100}
    with matplotlib.rc_context(style if isinstance(style, dict) else {}):
        yield


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.5) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path


def _roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    keep = fpr > 0  # rejection 1/eps_B is infinite where no background passes
    return tpr[keep], 1.0 / fpr[keep]


def roc(selections: Sequence[Any], y: np.ndarray, domain: str, title: str, path: Path) -> Path | None:
    """Background rejection 1/eps_B against signal efficiency, one curve per selection;
    the dot marks each selection's working point."""
    from autopid.metrics import efficiency_purity_f1, roc_auc

    if len(np.unique(y)) < 2:
        return None
    with _style():
        fig, (ax,) = new_figure()
        for s in selections:
            score = getattr(s, domain)
            eff, rej = _roc_points(y, score)
            line, = ax.plot(eff, rej, lw=2.0 if s.is_model else 1.3, label=f"{s.name} (AUC {roc_auc(y, score):.3f})")
            wp = efficiency_purity_f1(y, score, s.threshold)
            eps_b = float(np.mean(score[~y.astype(bool)] >= s.threshold))
            if eps_b > 0:
                ax.plot([wp["efficiency"]], [1.0 / eps_b], "o", color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("signal efficiency")
        ax.set_ylabel("background rejection 1/$\\epsilon_B$")
        ax.set_xlim(0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        return save(fig, path)


def efficiency_purity(selections: Sequence[Any], domain: str, kinematic: str, title: str, path: Path) -> Path:
    """Efficiency and purity at each selection's cut, in bins of p or rigidity."""
    with _style():
        fig, axes = new_figure(ncols=2, width=5.0)
        for key, ax in zip(("efficiency", "purity"), axes):
            for s in selections:
                rows = s.metrics[domain]["binned"][key]
                lo = np.array([r["low"] for r in rows])
                hi = np.array([r["high"] for r in rows])
                val = np.array([r["value"] for r in rows], dtype=float)
                n = np.array([r["n_signal"] if key == "efficiency" else r["n"] for r in rows], dtype=float)
                # binomial error on the fraction, from the rows that enter its denominator
                err = np.sqrt(np.clip(val * (1 - val), 0, None) / np.maximum(n, 1))
                centre = np.sqrt(lo * hi) if lo.min() > 0 else (lo + hi) / 2
                ax.errorbar(centre, val, xerr=[centre - lo, hi - centre], yerr=err, fmt="o", ms=4,
                            lw=2.0 if s.is_model else 1.0, label=s.name)
            ax.set_xscale("log")
            ax.set_xlabel(KIN_LABEL.get(kinematic, kinematic))
            ax.set_ylabel(key)
            ax.set_ylim(0, 1.05)
        axes[0].legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        return save(fig, path)


def score_distributions(model: Any, mc: pd.DataFrame, data: pd.DataFrame, title: str, path: Path) -> Path:
    """The model's score on MC (signal / background by MC truth) and on Data (all events:
    no truth is used on the Data side of this figure)."""
    # the observed range rather than [0, 1]: an undertrained model's scores can sit in one narrow band
    allscores = np.concatenate([model.mc, model.data])
    lo, hi = float(allscores.min()), float(allscores.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 41)
    with _style():
        fig, (ax,) = new_figure()
        y = mc["y"].to_numpy().astype(bool)
        ax.hist(model.mc[y], bins=bins, density=True, histtype="stepfilled", alpha=0.35, label="MC signal")
        ax.hist(model.mc[~y], bins=bins, density=True, histtype="stepfilled", alpha=0.35, label="MC background")
        ax.hist(model.mc, bins=bins, density=True, histtype="step", lw=1.5, color="k", label="MC all")
        if len(data):
            counts, edges = np.histogram(model.data, bins=bins)
            width = np.diff(edges)
            norm = counts.sum() * width
            ax.errorbar((edges[:-1] + edges[1:]) / 2, counts / norm, yerr=np.sqrt(counts) / norm, fmt="o", ms=3,
                        color="C3", label="Data (all events)")
        ax.axvline(model.threshold, ls="--", color="grey", label=f"cut {model.threshold:.3f}")
        ax.set_yscale("log")
        ax.set_xlabel(f"{model.name} score")
        ax.set_ylabel("normalised entries")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        return save(fig, path)


def l1_charge(frame: pd.DataFrame, selected: np.ndarray, species_order: Sequence[str], domain_label: str,
              path: Path, column: str = "trk_charge_l1") -> Path:
    """The L1 charge by true species, before and after the ML selection (stacked)."""
    q = frame[column].to_numpy(np.float64)
    ok = np.isfinite(q)
    lo, hi = np.nanpercentile(q[ok], [0.5, 99.5]) if ok.any() else (0.0, 1.0)
    bins = np.linspace(np.floor(lo * 2) / 2, np.ceil(hi * 2) / 2, 61)
    names = [s for s in species_order if (frame["true_species"] == s).any()]
    if (frame["true_species"] == "other").any() and "other" not in names:
        names.append("other")
    with _style():
        fig, axes = new_figure(ncols=2, width=5.5)
        for ax, mask, label in ((axes[0], np.ones(len(q), bool), "before the ML selection"),
                                (axes[1], np.asarray(selected, bool), "after the ML selection")):
            parts = [q[ok & mask & (frame["true_species"].to_numpy() == s)] for s in names]
            ax.hist(parts, bins=bins, stacked=True, histtype="stepfilled", alpha=0.8,
                    label=[f"{s} ({len(p)})" for s, p in zip(names, parts)])
            ax.set_yscale("log")
            ax.set_xlabel("L1 charge $Q_{L1}$")
            ax.set_ylabel("events")
            ax.set_title(f"{label} ({int((ok & mask).sum())} events)", fontsize=10)
            ax.legend(fontsize=8, title="true species")
        fig.suptitle(domain_label, fontsize=10)
        return save(fig, path)


def attention(weights: dict[str, np.ndarray], groups: dict[str, np.ndarray], branch_names: Sequence[str],
              title: str, path: Path) -> Path:
    """Mean attention each MDA branch receives, per group of events (with the spread)."""
    with _style():
        fig, axes = new_figure(ncols=2, width=5.0)
        x = np.arange(len(branch_names))
        width = 0.8 / max(len(groups), 1)
        for i, (label, (key, mask)) in enumerate(groups.items()):
            w = weights[key][mask]
            if not len(w):
                continue
            axes[0].bar(x + i * width - 0.4 + width / 2, w.mean(axis=0), width, yerr=w.std(axis=0), capsize=2,
                        label=f"{label} ({len(w)})")
        axes[0].set_xticks(x, list(branch_names))
        axes[0].set_ylabel("mean attention weight")
        axes[0].legend(fontsize=8)
        allw = np.concatenate([weights[k] for k in weights])
        axes[1].boxplot([allw[:, j] for j in range(allw.shape[1])], showfliers=False)
        axes[1].set_xticks(x + 1, list(branch_names))
        axes[1].set_ylabel("attention weight per event (MC and Data)")
        fig.suptitle(title, fontsize=10)
        return save(fig, path)


def training_history(metrics: pd.DataFrame, title: str, path: Path) -> Path:
    """Validation metrics per epoch of a training run (metrics.csv)."""
    with _style():
        fig, (ax,) = new_figure()
        for col in ("val_auc", "objective", "domain_accuracy", "val_f1"):
            if col in metrics and metrics[col].notna().any():
                ax.plot(metrics["epoch"], metrics[col], "o-", label=col)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation metric")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        return save(fig, path)


def search_history(numbers: np.ndarray, values: np.ndarray, states: Sequence[str], maximize: bool, title: str,
                   path: Path) -> Path:
    """Objective of each trial in order, with the best so far."""
    with _style():
        fig, (ax,) = new_figure()
        done = np.array([s == "COMPLETE" for s in states])
        ax.plot(numbers[done], values[done], "o", label="completed trial")
        if done.any():
            acc = np.maximum.accumulate if maximize else np.minimum.accumulate
            ax.step(numbers[done], acc(values[done]), where="post", color="C3", label="best so far")
        for i, n in enumerate(numbers[~done]):
            ax.axvline(n, color="grey", alpha=0.3, lw=1, label="running, pruned or failed trial" if i == 0 else None)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial number")
        ax.set_ylabel("objective")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        return save(fig, path)


def importances(values: dict[str, float], title: str, path: Path) -> Path:
    with _style():
        fig, (ax,) = new_figure(height=max(2.5, 0.5 * len(values) + 1.5))
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names])
        ax.set_xlabel("importance (fANOVA)")
        ax.set_title(title, fontsize=10)
        return save(fig, path)
