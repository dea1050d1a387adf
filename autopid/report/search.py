"""Search history and parameter importances of one Optuna study (read-only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autopid.errors import InputError
from autopid.report import figures
from autopid.report.inputs import StudySource
from autopid.search import records


@dataclass
class StudyReport:
    name: str
    n_trials: int
    n_complete: int
    best_value: float | None
    best_params: dict[str, object]
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # completed, stopped_early, failed, interrupted
    best_trial: int | None = None
    best_epoch: int | None = None


def report_study(study: StudySource, out_dir: Path) -> StudyReport:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name=study.optuna_study, storage=study.storage)
    except Exception as exc:  # a missing db, a renamed study: the message names both
        raise InputError(f"{study.storage}: cannot open Optuna study {study.optuna_study!r} "
                         f"({type(exc).__name__}: {exc})") from exc
    trials = [t for t in st.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    maximize = st.direction == optuna.study.StudyDirection.MAXIMIZE
    # the same rows and the same "best" as trials.csv and summary.json (autopid.search.records)
    rows = records.trial_rows(st, study.directory / "trials") if study.directory is not None else []
    metric = str(study.summary.get("metric", "objective"))
    best = records.best_row(rows, metric, "max" if maximize else "min")
    rep = StudyReport(study.name, len(rows) or len(trials), len(complete),
                      float(best[records.metric_column(metric)]) if best else None,
                      records.trial_params(st, best["trial"]) if best else {}, counts=records.counts(rows),
                      best_trial=int(best["trial"]) if best else None,
                      best_epoch=int(best["best_epoch"]) if best and best.get("best_epoch") is not None else None)
    slug = study.name.replace("/", "-")
    if trials:
        numbers = np.array([t.number for t in trials])
        values = np.array([t.value if t.value is not None else np.nan for t in trials], dtype=float)
        rep.figures["search history"] = figures.search_history(
            numbers, values, [t.state.name for t in trials], maximize,
            f"{study.name}: objective per trial ({len(complete)}/{len(trials)} completed)",
            out_dir / f"{slug}-search-history.png")
    else:
        rep.notes.append("the study has no trials yet: no search history")
    if len(complete) < 2:
        rep.notes.append(f"{len(complete)} completed trial(s): parameter importances need at least 2")
        return rep
    try:
        imp = optuna.importance.get_param_importances(st)
    except Exception as exc:  # e.g. every trial sampled the same values
        rep.notes.append(f"parameter importances not computed: {type(exc).__name__}: {exc}")
        return rep
    if imp:
        rep.figures["parameter importances"] = figures.importances(
            imp, f"{study.name}: parameter importances ({len(complete)} trials)",
            out_dir / f"{slug}-param-importances.png")
    else:
        rep.notes.append("no parameter varied between completed trials: no importances")
    return rep
