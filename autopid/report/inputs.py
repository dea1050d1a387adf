"""What a report is about: the kind of directory, and the trained models it holds.

A training run directory holds ``result.json`` and ``model.pt``; a search directory
``search.json`` and ``studies/``; a retraining work directory ``state.db`` (its decision
log) and one search directory per job and period (see :func:`_retrain_layout`). Anything else is refused with the
path in the message, before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopid.errors import ConfigError, InputError

RUN, SEARCH, RETRAIN = "run", "search", "retrain"


@dataclass
class ModelSource:
    """One trained model to report on, and where its pieces lie (loaded lazily)."""

    title: str
    slug: str  # file-name prefix of its figures
    model_path: Path
    config_path: Path
    cache: str
    metrics_csv: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudySource:
    """One Optuna study of a search directory."""

    name: str  # the study directory name, e.g. proton-LHC26a
    optuna_study: str
    storage: str
    summary: dict[str, Any]
    model: ModelSource | None
    directory: Path | None = None  # the study directory (trials/ holds each trial's record)


@dataclass
class ReportInput:
    kind: str
    directory: Path
    models: list[ModelSource]
    studies: list[StudySource]
    notes: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({type(exc).__name__}: {exc})") from exc


def _is_run(d: Path) -> bool:
    return (d / "result.json").is_file() and (d / "model.pt").is_file()


def _is_search(d: Path) -> bool:
    return (d / "search.json").is_file() and (d / "studies").is_dir()


def _run_source(d: Path, title: str, slug: str) -> ModelSource:
    info = _read_json(d / "result.json")
    if "cache" not in info:
        raise InputError(f"{d / 'result.json'}: no 'cache' entry; cannot find the preprocessed data of this run")
    if not (d / "config.yaml").is_file():
        raise InputError(f"{d}: run directory without config.yaml")
    metrics = d / "metrics.csv"
    return ModelSource(title=title, slug=slug, model_path=d / "model.pt", config_path=d / "config.yaml",
                       cache=str(info["cache"]), metrics_csv=metrics if metrics.is_file() else None)


def _space_name(d: Path) -> str | None:
    """The search space's name (the Optuna study is ``<name>-<study dir>``), from the
    space as run (``config.yaml``)."""
    try:
        import yaml

        return str(yaml.safe_load((d / "config.yaml").read_text())["name"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _search_studies(d: Path, prefix: str = "") -> tuple[list[StudySource], list[str]]:
    state = _read_json(d / "search.json")
    storage = state.get("storage") or f"sqlite:///{(d / 'optuna.db').resolve()}"
    space = _space_name(d)
    studies, notes = [], []
    for sdir in sorted(p for p in (d / "studies").iterdir() if p.is_dir()):
        summary_file = sdir / "summary.json"
        summary = _read_json(summary_file) if summary_file.is_file() else {}
        optuna_study = (summary.get("optuna_study") or (state.get("optuna_studies") or {}).get(sdir.name)
                        or (f"{space}-{sdir.name}" if space else None))
        if optuna_study is None:
            notes.append(f"study {prefix}{sdir.name}: unfinished and {d / 'config.yaml'} unreadable; skipped")
            continue
        model = None
        if (sdir / "best_model.pt").is_file() and (sdir / "best_config.yaml").is_file() and summary.get("cache"):
            model = ModelSource(title=f"{prefix}{sdir.name}: best trial {summary.get('best_trial', '?')}",
                                slug=f"{prefix}{sdir.name}".replace("/", "-"), model_path=sdir / "best_model.pt",
                                config_path=sdir / "best_config.yaml", cache=str(summary["cache"]))
        elif not summary:
            # a search still running (or killed): its history is in optuna.db already
            notes.append(f"study {prefix}{sdir.name}: unfinished (no summary.json): search history only")
        else:
            notes.append(f"study {prefix}{sdir.name}: no best model (every trial failed?)")
        studies.append(StudySource(name=f"{prefix}{sdir.name}", optuna_study=optuna_study, storage=storage,
                                   summary=summary, model=model, directory=sdir))
    return studies, notes


def _retrain_layout(d: Path) -> tuple[list[Path], Path | None] | None:
    """A retraining work directory (``state.work_dir`` of a job file: ``state.db`` and
    ``<job>/<period>/search``) or one job's directory below it (``<period>/search``).

    Returns the search directories and the state database, or None when ``d`` is neither.
    """
    searches = sorted({p for pattern in ("*/search", "*/*/search") for p in d.glob(pattern) if _is_search(p)})
    db = next((p for p in (d / "state.db", d.parent / "state.db") if p.is_file()), None)
    if db is None and not any(d.glob("*/*/search")):
        return None
    if db is not None and db.parent != d and not searches:
        return None  # a directory that merely sits next to a state database
    return searches, db


def _decisions(db: Path, jobs: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (job, period) from the retraining state database (its decision log)."""
    try:
        from autopid.retrain.state import StateStore

        rows = StateStore(f"sqlite:///{db.resolve()}").all_runs()
    except Exception as exc:  # an older or newer schema: the figures are still worth writing
        return [], [f"{db}: decision log not readable ({type(exc).__name__}: {exc})"]
    out = []
    for r in rows:
        if jobs and r.job not in jobs:
            continue
        d = r.decision or {}
        out.append({"job": r.job, "period": r.period, "status": r.status, "attempts": r.attempts,
                    "serving before": r.serving or "", "published": r.published or "",
                    "candidate": d.get("candidate"), "serving": d.get("serving"),
                    "improvement": d.get("improvement"), "reason": d.get("reason") or r.error or ""})
    return out, []


def discover(directory: str | Path) -> ReportInput:
    """Classify ``directory`` and list what to report on."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: no such directory (give a run, search or retraining directory)")
    if _is_run(d):
        return ReportInput(RUN, d, [_run_source(d, f"run {d.name}", "run")], [])
    if _is_search(d):
        studies, notes = _search_studies(d)
        return ReportInput(SEARCH, d, [s.model for s in studies if s.model], studies, notes)
    layout = _retrain_layout(d)
    if layout is not None:
        searches, db = layout
        studies, notes = [], []
        for sdir in searches:
            # <job>/<period>/search -> "<job>/<period>/<study>": the period names the study
            st, nt = _search_studies(sdir, prefix=f"{sdir.parent.relative_to(d).as_posix()}/")
            studies += st
            notes += nt
        decisions: list[dict[str, Any]] = []
        if db is None:
            notes.append(f"{d}: no state.db (a state database elsewhere?): no decision log")
        else:
            # a job directory shows its own job's rows only
            jobs = set() if db.parent == d else {d.name}
            decisions, more = _decisions(db, jobs)
            notes += more
        if not searches:
            notes.append(f"{d}: no finished search directory yet")
        return ReportInput(RETRAIN, d, [s.model for s in studies if s.model], studies, notes, decisions)
    raise ConfigError(f"{d}: not a run directory (result.json + model.pt), a search directory "
                      "(search.json + studies/) or a retraining directory (state.db + <job>/<period>/search)")
