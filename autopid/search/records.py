"""What a trial leaves in its directory, and the study files built from it.

Every trial writes ``trials/<number>/`` (the number is its Optuna trial number):
``state.pt`` (the checkpoint it resumes from), ``model-epochNNNN.pt`` (its best epoch's
model; the checkpoint names it) and ``record.json`` (its epochs and best epoch). The
record is written before the epoch is reported to Tune, so the driver can always tell a
finished trial from one that was cut short. ``trials.csv`` and ``summary.json`` are built
from the Optuna study and these records alone: they cannot disagree with ``optuna.db``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from autopid.provenance import atomic_write_text

RECORD_FILE = "record.json"
STATE_FILE = "state.pt"
# Optuna trial state -> what autopid calls it
STATUS = {"COMPLETE": "completed", "PRUNED": "stopped_early", "FAIL": "failed", "RUNNING": "interrupted"}
KEY_METRICS = ("objective", "val_auc", "val_f1", "domain_accuracy")


def trial_dir(trials_root: str | Path, number: int) -> Path:
    return Path(trials_root) / f"{number:04d}"


def model_file(epoch: int) -> str:
    return f"model-epoch{epoch:04d}.pt"


def write_record(tdir: Path, number: int, params: dict[str, Any], history: list[dict[str, float]],
                 best_epoch: int, max_epochs: int, stop_reason: str | None) -> dict[str, Any]:
    best = next((h for h in history if int(h["epoch"]) == best_epoch), None)
    record = {
        "number": number, "params": params, "epochs_run": len(history), "max_epochs": max_epochs,
        "best_epoch": best_epoch if best is not None else None,
        "best": {k: _finite(best.get(k)) for k in KEY_METRICS} if best is not None else None,
        "model": model_file(best_epoch) if best is not None else None,
        "finished": stop_reason is not None, "stop_reason": stop_reason,
        "train_seconds": float(sum(h.get("train_seconds", 0.0) for h in history)),
        "history": [{k: _finite(v) for k, v in h.items()} for h in history],
    }
    atomic_write_text(tdir / RECORD_FILE, json.dumps(record, indent=1) + "\n")
    return record


def read_record(tdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((tdir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def best_value(record: dict[str, Any] | None, metric: str = "objective") -> float | None:
    """``metric`` at the trial's best epoch (the epoch with the best objective)."""
    if not record or not record.get("best"):
        return None
    return record["best"].get(metric)


def trial_rows(study: Any, trials_root: Path) -> list[dict[str, Any]]:
    """One row per trial that started, in trial-number order; metrics are those of the
    trial's best epoch."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state.name not in STATUS:
            continue  # WAITING: enqueued, never started
        record = read_record(trial_dir(trials_root, t.number)) or {}
        best = record.get("best") or {}
        row: dict[str, Any] = {
            "trial": t.number, "status": STATUS[t.state.name], "epochs": int(record.get("epochs_run", 0)),
            "best_epoch": record.get("best_epoch"), "best_objective": best.get("objective"),
            **{k: best.get(k) for k in KEY_METRICS if k != "objective"},
            "train_seconds": record.get("train_seconds"),
            "seconds": t.user_attrs.get("seconds"),
            "stop_reason": t.user_attrs.get("stop_reason", record.get("stop_reason")),
        }
        row.update({f"param.{k}": _cell(v) for k, v in sorted(t.user_attrs.get("params", {}).items())})
        if t.state.name == "FAIL":
            row["error"] = t.user_attrs.get("error", "")
        rows.append(row)
    return rows


def trial_params(study: Any, number: int) -> dict[str, Any]:
    """A trial's parameters as the training config takes them (list choices decoded)."""
    t = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    return dict(t.user_attrs.get("params", t.params))


def metric_column(metric: str) -> str:
    return "best_objective" if metric == "objective" else metric


def best_row(rows: list[dict[str, Any]], metric: str = "objective", mode: str = "max") -> dict[str, Any] | None:
    """The trial with the best ``metric`` at its best epoch, among trials that ended without
    error (completed or stopped early); the lower trial number wins a tie."""
    col = metric_column(metric)
    ok = [r for r in rows if r["status"] in ("completed", "stopped_early") and _finite(r.get(col)) is not None]
    if not ok:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(ok, key=lambda r: (sign * float(r[col]), -r["trial"]))


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> None:
    frame = pd.DataFrame(rows)
    atomic_write_text(path, frame.to_csv(index=False))


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out = {s: 0 for s in ("completed", "stopped_early", "failed", "interrupted")}
    for r in rows:
        out[r["status"]] += 1
    return out


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _cell(v: Any) -> Any:
    # lists (a categorical choice such as [128, 32]) are written as JSON so they read back
    return json.dumps(v) if isinstance(v, (list, dict)) else v
