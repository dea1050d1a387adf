"""Efficiency and purity against p or rigidity, one figure per experiment and species,
every method in each panel (MC on the left, Data with hidden truth on the right)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autopid.benchmark.records import parse_bin
from autopid.benchmark.tables import METHOD_NAMES, Index

AXIS = {"alice": "p (GeV/c)", "ams": "inner rigidity (GV)"}


def write_plots(folder: Path, records: Sequence[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ix = Index(records)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for exp in dict.fromkeys(r["experiment"] for r in records):
        for sp in ix.species(exp):
            bins = ix.bins(exp, sp)
            if not bins:
                continue
            edges = np.array([parse_bin(b) for b in bins])
            x = np.sqrt(edges[:, 0] * edges[:, 1]) if (edges > 0).all() else edges.mean(axis=1)
            xerr = np.abs(np.stack([x - edges[:, 0], edges[:, 1] - x]))
            fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, sharey="row")
            for col, domain in enumerate(("mc", "data")):
                for row, metric in enumerate(("efficiency", "purity")):
                    ax = axes[row, col]
                    for i, m in enumerate(ix.methods(exp)):
                        recs = [ix.get(exp, sp, None, m, domain, metric, b) for b in bins]
                        if all(r is None for r in recs):
                            continue
                        y = np.array([np.nan if r is None or r["value"] is None else r["value"] for r in recs])
                        e = np.array([0.0 if r is None or r["std"] is None else r["std"] for r in recs])
                        ax.errorbar(x * (1 + 0.02 * (i - 3)), y, yerr=e, xerr=xerr if i == 0 else None,
                                    marker="o", ms=4, lw=1, capsize=2, label=METHOD_NAMES.get(m, m))
                    ax.set_xscale("log" if (edges > 0).all() else "linear")
                    ax.set_ylim(-0.02, 1.05)
                    ax.grid(alpha=0.3)
                    if col == 0:
                        ax.set_ylabel(metric)
                    if row == 1:
                        ax.set_xlabel(AXIS.get(exp, "kinematic variable"))
                    title = "MC" if domain == "mc" else "Data (hidden truth, evaluation only)"
                    ax.set_title(f"{title}: {metric}", fontsize=10)
            handles, labels = axes[0, 0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9)
            fig.suptitle(f"{exp}: {sp}, efficiency and purity at each method's working point")
            fig.tight_layout(rect=(0, 0.06, 1, 0.96))
            path = folder / f"{exp}_{sp}_efficiency_purity.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths
