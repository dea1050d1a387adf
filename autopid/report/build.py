"""``make_report``: evaluate, draw, and write ``index.html`` next to its PNGs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autopid._logging import get_logger
from autopid.provenance import atomic_write_text
from autopid.report import figures
from autopid.report.evaluation import Evaluation, evaluate_source
from autopid.report.html import render
from autopid.report.inputs import ModelSource, discover
from autopid.report.search import StudyReport, report_study

_log = get_logger(__name__)


@dataclass
class ModelReport:
    evaluation: Evaluation
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG


@dataclass
class Report:
    path: Path
    figures: list[Path]


def model_figures(ev: Evaluation, out_dir: Path) -> ModelReport:
    rep = ModelReport(ev)
    slug, sp = ev.source.slug, ev.species
    y_mc = ev.mc["y"].to_numpy()
    has_data = len(ev.data) > 0 and "y" in ev.data  # Data with (hidden) truth to plot against

    def add(caption: str, path: Path | None) -> None:
        if path is not None:
            rep.figures[caption] = path

    if ev.source.metrics_csv is not None:
        add("Validation metrics per epoch (training run)",
            figures.training_history(pd.read_csv(ev.source.metrics_csv), f"{ev.source.title}: training",
                                     out_dir / f"{slug}-training.png"))
    add(f"ROC, {sp} vs rest, test MC (MC truth): model vs baselines",
        figures.roc(ev.selections, y_mc, "mc", f"{sp}: ROC on test MC", out_dir / f"{slug}-roc-mc.png"))
    if has_data:
        add(f"ROC on simulated Data, {figures.HIDDEN}",
            figures.roc(ev.selections, ev.data["y"].to_numpy(), "data", f"{sp}: ROC on Data, {figures.HIDDEN}",
                        out_dir / f"{slug}-roc-data-hidden-truth.png"))
    if ev.kinematic and ev.bins:
        kin = figures.KIN_LABEL.get(ev.kinematic, ev.kinematic)
        add(f"Efficiency and purity against {kin}, test MC, at each selection's cut",
            figures.efficiency_purity(ev.selections, "mc", ev.kinematic, f"{sp}: test MC",
                                      out_dir / f"{slug}-efficiency-purity-mc.png"))
        if has_data:
            add(f"Efficiency and purity against {kin} on Data, {figures.HIDDEN}",
                figures.efficiency_purity(ev.selections, "data", ev.kinematic, f"{sp}: Data, {figures.HIDDEN}",
                                          out_dir / f"{slug}-efficiency-purity-data-hidden-truth.png"))
    add("Score distributions: MC by MC truth, Data as measured (no truth used)",
        figures.score_distributions(ev.model, ev.mc, ev.data, f"{sp}: model score, test split",
                                    out_dir / f"{slug}-scores.png"))
    if ev.experiment == "ams" and "trk_charge_l1" in ev.mc:
        order = list(ev.species_names)
        cut = ev.model.threshold
        add("L1 charge by true species before and after the ML selection, test MC",
            figures.l1_charge(ev.mc, ev.model.mc >= cut, order, f"{sp}: L1 charge, test MC (MC truth)",
                              out_dir / f"{slug}-l1-charge-mc.png"))
        if has_data:
            add(f"L1 charge by true species before and after the ML selection, Data, {figures.HIDDEN}",
                figures.l1_charge(ev.data, ev.model.data >= cut, order, f"{sp}: L1 charge, Data, {figures.HIDDEN}",
                                  out_dir / f"{slug}-l1-charge-data-hidden-truth.png"))
    if ev.attention and ev.branch_names:
        y = y_mc.astype(bool)
        groups: dict[str, tuple[str, np.ndarray]] = {"MC signal": ("mc", y), "MC background": ("mc", ~y)}
        if "data" in ev.attention:
            # all Data events: the grouping uses no hidden truth
            groups["Data (all events)"] = ("data", np.ones(len(ev.attention["data"]), bool))
        add("MDA branch attention: the weight the fused vector gives each branch",
            figures.attention(ev.attention, groups, ev.branch_names, f"{sp}: MDA branch attention, test split",
                              out_dir / f"{slug}-attention.png"))
    return rep


def make_report(directory: str | Path, out: str | Path | None = None, *, max_rows: int | None = 50_000,
                learned_baselines: bool = True) -> Report:
    """Write the report of a run, search or retraining directory; returns the HTML path
    and every figure written."""
    t0 = time.perf_counter()
    inp = discover(directory)
    out_path = Path(out) if out is not None else inp.directory / "report" / "index.html"
    out_dir = out_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    studies: list[StudyReport] = [report_study(s, out_dir) for s in inp.studies]
    models: list[ModelReport] = []
    for src in inp.models:
        models.append(model_figures(_evaluate(src, max_rows, learned_baselines), out_dir))
    page = render(inp, studies, models, out_dir, seconds=time.perf_counter() - t0, max_rows=max_rows)
    atomic_write_text(out_path, page)
    written = [p for s in studies for p in s.figures.values()] + [p for m in models for p in m.figures.values()]
    return Report(out_path, written)


def _evaluate(src: ModelSource, max_rows: int | None, learned: bool) -> Evaluation:
    _log.info("evaluating %s", src.title)
    return evaluate_source(src, max_rows=max_rows, learned_baselines=learned)
