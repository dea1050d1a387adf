"""What a search prints: one line per trial event, a progress bar over the budget, and
a final table. Ray's own tables and logs go to ``ray.log`` in the search directory."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback
from tqdm.auto import tqdm

from autopid._logging import get_logger, progress_enabled

_log = get_logger("autopid.search")


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return str(v)


def _num(v: Any, spec: str = ".4f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(f) else format(f, spec)


class Console(Callback):
    """Trial events as log lines (INFO; failures as WARNING, so -q still shows them)."""

    def __init__(self, study: str, budget: int, done: int, max_epochs: int, watchdog: Any,
                 tune_trials: dict[str, Any]) -> None:
        self.study = study
        self.max_epochs = max_epochs
        self.watchdog = watchdog
        self.tune_trials = tune_trials
        self.bar = tqdm(total=budget, initial=done, desc=study, unit="trial", file=sys.stderr, leave=False,
                        disable=not progress_enabled(), dynamic_ncols=True)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tune_trials[trial.trial_id] = trial
        self.watchdog.touch()
        cfg = trial.config or {}
        params = " ".join(f"{_short(k)}={_fmt(v)}" for k, v in (cfg.get("params") or {}).items())
        _log.info("trial %s started   %s", cfg.get("trial", "?"), params)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self.watchdog.touch()
        _log.info("trial %s epoch %d/%d objective %s  auc %s  domain acc %s  (%.1f s)", result.get("trial", "?"),
                  int(result.get("epoch", 0)), self.max_epochs, _num(result.get("objective")),
                  _num(result.get("val_auc")), _num(result.get("domain_accuracy"), ".3f"),
                  float(result.get("train_seconds", 0.0) or 0.0))

    def outcome(self, number: int, status: str, record: dict[str, Any]) -> None:
        self.watchdog.touch()
        best = record.get("best") or {}
        where = f"best objective {_num(best.get('objective'))} at epoch {record.get('best_epoch')}" if best else ""
        if status == "completed":
            why = " (no improvement: early stopping)" if record.get("stop_reason") == "patience" else ""
            _log.info("trial %d completed %s%s", number, where, why)
        elif status == "stopped_early":
            by = "ASHA" if record.get("stop_reason") == "asha" else "the time budget"
            _log.info("trial %d stopped by %s after %d epoch(s); %s", number, by, record.get("epochs_run", 0), where)
        elif status == "failed":
            _log.warning("trial %d failed: %s", number, record.get("error") or record.get("stop_reason"))
        else:
            _log.info("trial %d interrupted after %d epoch(s); it continues on --resume", number,
                      record.get("epochs_run", 0))
        if status != "interrupted":
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def final_table(summaries: list[dict[str, Any]], search_dir: Path) -> str:
    """The closing table: one row per study, at most 100 columns."""
    lines = [f"search directory: {search_dir}",
             f"{'study':<20}{'done':>6}{'compl':>6}{'asha':>5}{'fail':>5}{'best':>5}{'epoch':>6}"
             f"{'objective':>10}{'val_auc':>9}{'dom_acc':>8}  state"]
    for s in summaries:
        m = s.get("best_metrics") or {}
        done = s["completed"] + s["stopped_early"] + s["failed"]
        lines.append(
            f"{s['study'][:19]:<20}{done:>3}/{s['budget']:<2}{s['completed']:>6}{s['stopped_early']:>5}"
            f"{s['failed']:>5}{_opt(s.get('best_trial')):>5}{_opt(s.get('best_epoch')):>6}"
            f"{_num(m.get('objective')):>10}{_num(m.get('val_auc')):>9}{_num(m.get('domain_accuracy'), '.3f'):>8}"
            f"  {s['state']}")
    lines = [line[:100] for line in lines]
    for s in summaries:  # paths in full, to be copied
        if s.get("best_model"):
            lines.append(f"{s['study']}: best model {s['best_model']}")
    return "\n".join(lines)


def _opt(v: Any) -> str:
    return "-" if v is None else str(v)


def route_ray_logs(log_file: Path, verbose: bool) -> logging.Handler:
    """Ray's, Tune's and Optuna's Python logs go to ``log_file``; with ``-v`` to the
    console too. Returns the file handler (remove it with :func:`unroute`)."""
    import optuna

    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:
        strip_console_handlers()
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    ray_logger.propagate = False
    if not verbose:
        optuna.logging.disable_default_handler()
    optuna.logging.get_logger("optuna").addHandler(handler)
    return handler


def strip_console_handlers() -> None:
    """Remove the console handlers Ray installs on its loggers (``ray.init`` adds them again)."""
    for name in ("ray", "ray.tune", "ray.train", "ray.air", "ray.data"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)


def unroute(handler: logging.Handler) -> None:
    import optuna

    logging.getLogger("ray").removeHandler(handler)
    optuna.logging.get_logger("optuna").removeHandler(handler)
    handler.close()
