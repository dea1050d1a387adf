"""The Optuna study is the one record of a search: Tune asks it for trials and tells it
every outcome, and a resume starts from what it holds.

Ray's own ``OptunaSearch`` keeps a second copy of the search state in Tune's experiment
checkpoint; after a crash the two disagree (finished trials run again, killed ones stay
RUNNING, a re-seeded TPE proposes the same points). Here, instead:

- a new Tune experiment is started on every run, the study says what is left;
- a trial that was running when the driver died is run again under its own Optuna trial
  number (it continues from its checkpoint), never as a new trial;
- the sampler's seed moves on with the number of trials already in the study, so a
  resumed search does not replay the proposals of the first session.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from autopid.search import records
from autopid.search.space import Choice, Distribution, IntRange, LogUniform, Uniform

Outcome = Callable[[int, str, dict[str, Any]], None]


def _encode_choice(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def optuna_distributions(params: dict[str, Distribution]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for key, d in params.items():
        if isinstance(d, Uniform):
            out[key] = FloatDistribution(d.low, d.high)
        elif isinstance(d, LogUniform):
            out[key] = FloatDistribution(d.low, d.high, log=True)
        elif isinstance(d, IntRange):
            out[key] = IntDistribution(d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, Choice):
            out[key] = CategoricalDistribution([_encode_choice(c) for c in d.choices])
    return out


def decode_params(params: dict[str, Any], space_params: dict[str, Distribution]) -> dict[str, Any]:
    """Optuna's values as the training config takes them (list choices are stored as JSON)."""
    out = {}
    for key, value in params.items():
        d = space_params.get(key)
        if isinstance(d, Choice) and isinstance(value, str) and any(isinstance(c, (list, dict)) for c in d.choices):
            value = json.loads(value)
        out[key] = value
    return out


def encode_params(values: dict[str, Any], space_params: dict[str, Distribution]) -> dict[str, Any]:
    return {k: _encode_choice(v) if isinstance(space_params.get(k), Choice) else v
            for k, v in values.items() if k in space_params}


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite: wait for another process's write instead of failing at once
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                      if url.startswith("sqlite") else None)


def claim_study(storage_url: str, name: str, direction: str, owner: str) -> str:
    """Create a new study for the search directory ``owner`` and return its name: ``name``,
    or ``name`` with a random suffix when the storage (shared by several searches, e.g. a
    team's PostgreSQL) already holds a study of that name. Creating is atomic in the
    database, so two searches started at once never share a study; sharing one would let
    each take the other's running trials for its own cut-short ones and run them again."""
    import uuid

    storage = _rdb_storage(storage_url)
    candidate = name
    for _ in range(5):
        try:
            study = optuna.create_study(study_name=candidate, storage=storage, direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            candidate = f"{name}-{uuid.uuid4().hex[:8]}"
            continue
        study.set_user_attr("search_dir", owner)
        return candidate
    raise RuntimeError(f"{storage_url}: could not create a study named {name!r} or a variant of it")


def open_study(storage_url: str, name: str, seed: int, direction: str, sampler: str = "tpe",
               budget: int = 100) -> optuna.Study:
    """Load or create the study; the sampler's seed depends on how many trials it already
    has. TPE starts modelling after a third of the budget (at most Optuna's default 10
    random trials), so that a small search is more than a random one."""
    study = optuna.create_study(study_name=name, storage=_rdb_storage(storage_url), direction=direction,
                                load_if_exists=True)
    n = len(study.get_trials(deepcopy=False))
    s = seed + 7919 * n
    study.sampler = (optuna.samplers.RandomSampler(seed=s) if sampler == "random" else
                     # constant_liar: trials running at once are not proposed the same point
                     optuna.samplers.TPESampler(seed=s, n_startup_trials=max(2, min(10, budget // 3)),
                                                multivariate=True, constant_liar=True))
    return study


def finished_count(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               for t in study.get_trials(deepcopy=False))


def settle_stale(study: optuna.Study, trials_root: Path, metric: str) -> list[int]:
    """Trials left RUNNING by a driver that died. One whose record says it finished is
    told now; the others are returned, to be run again under their own numbers."""
    rerun = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = records.read_record(records.trial_dir(trials_root, t.number))
        if record is not None and record.get("finished"):
            _tell_complete(study, t.number, record, metric, {})
        else:
            rerun.append(t.number)
    return sorted(rerun)


def _tell_complete(study: optuna.Study, number: int, record: dict[str, Any], metric: str,
                   attrs: dict[str, Any]) -> None:
    value = records.best_value(record, metric)
    tid = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    for k, v in {"stop_reason": record.get("stop_reason"), "best_epoch": record.get("best_epoch"), **attrs}.items():
        study._storage.set_trial_user_attr(tid, k, v)
    if value is None:
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, value)


class RecordingASHA(ASHAScheduler):
    """ASHA that remembers which trials it stopped, so they are told PRUNED, not
    confused with trials cut short by Ctrl-C or a stall."""

    def __init__(self, stopped: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped = stopped

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return decision


class StudySearcher(Searcher):
    """A Tune searcher backed by an Optuna study in RDB storage (see the module text)."""

    def __init__(self, study: optuna.Study, space_params: dict[str, Distribution], *, metric: str, mode: str,
                 budget_left: int, rerun: list[int], trials_root: Path, stopped_by_asha: set[str],
                 on_outcome: Outcome, deadline: float | None = None,
                 tune_trials: dict[str, Any] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.study = study
        self.space_params = space_params
        self.dists = optuna_distributions(space_params)
        self.left = budget_left
        self.rerun = list(rerun)
        self.trials_root = trials_root
        self.stopped_by_asha = stopped_by_asha
        self.on_outcome = on_outcome
        self.deadline = deadline
        self.tune_trials = tune_trials if tune_trials is not None else {}  # filled by a Tune callback
        self.live: dict[str, tuple[optuna.trial.Trial, float]] = {}
        self.unsettled: set[int] = set()  # cut short here: left RUNNING for a resume

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # metric, mode and space are fixed at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.left <= 0 or (self.deadline is not None and time.monotonic() >= self.deadline):
            return Searcher.FINISHED
        if self.rerun:
            number = self.rerun.pop(0)
            tid = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
            trial = optuna.trial.Trial(self.study, tid)
        else:
            trial = self.study.ask(self.dists)
            trial.set_user_attr("params", decode_params(trial.params, self.space_params))
        trial.set_user_attr("tune_trial_id", trial_id)
        self.left -= 1
        self.live[trial_id] = (trial, time.monotonic())
        return {"trial": trial.number, "params": decode_params(trial.params, self.space_params)}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial, _ = self.live.get(trial_id, (None, 0.0))
        value = result.get(self.metric)
        if trial is None or value is None:
            return
        try:
            trial.report(float(value), int(result.get("epoch", 0)))
        except Exception:  # noqa: BLE001 - a step reported twice after a resume is harmless
            pass

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial, started = self.live.pop(trial_id, (None, 0.0))
        if trial is None:
            return
        number = trial.number
        record = records.read_record(records.trial_dir(self.trials_root, number)) or {}
        attrs = {"seconds": time.monotonic() - started}
        if error:
            msg = _error_text(self.tune_trials.get(trial_id))
            trial.set_user_attr("error", msg)
            trial.set_user_attr("seconds", attrs["seconds"])
            self.study.tell(number, state=TrialState.FAIL)
            self.on_outcome(number, "failed", {"error": msg, **record})
        elif record.get("finished"):
            _tell_complete(self.study, number, record, self.metric, attrs)
            self.on_outcome(number, "completed", record)
        elif trial_id in self.stopped_by_asha or self._time_is_up():
            reason = "asha" if trial_id in self.stopped_by_asha else "time budget"
            for k, v in {**attrs, "stop_reason": reason, "best_epoch": record.get("best_epoch")}.items():
                trial.set_user_attr(k, v)
            # PRUNED keeps the trial's reported epochs, which TPE uses; FAIL if it never finished an epoch
            self.study.tell(number, state=TrialState.PRUNED if record.get("best") else TrialState.FAIL)
            self.on_outcome(number, "stopped_early" if record.get("best") else "failed",
                            {**record, "stop_reason": reason})
        else:
            # Ctrl-C or a stall: stays RUNNING in Optuna and runs again on --resume
            self.unsettled.add(number)
            self.on_outcome(number, "interrupted", record)

    def _time_is_up(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline - 1.0


def _error_text(tune_trial: Any) -> str:
    """The last line of the trial's exception (the full traceback is in ray.log)."""
    err = None
    if tune_trial is not None:
        try:  # the local error file exists as soon as Tune handled the error (get_error reads
            # the copy in the experiment's storage, which is synced later)
            err = Path(tune_trial.error_file).read_text()
        except Exception:  # noqa: BLE001 - the message is a courtesy
            err = None
    return error_summary(str(err or "")) or "the trial raised an error (see ray.log in the search directory)"


_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Exit))(?:\(\w+\))?(?::\s*(.*))?$")


def error_summary(traceback_text: str, limit: int = 300) -> str:
    """The innermost exception of a traceback as one line: its class and message,
    multi-line messages (pydantic's field list) joined, links to docs left out."""
    lines = [ln.strip() for ln in traceback_text.splitlines() if ln.strip()]
    start = next((i for i in range(len(lines) - 1, -1, -1) if _EXC_LINE.match(lines[i])), None)
    if start is None:
        return (lines[-1] if lines else "")[:limit]
    m = _EXC_LINE.match(lines[start])
    assert m is not None
    rest = []
    for ln in lines[start + 1:]:
        if ln.startswith(("During handling of the above", "The above exception", "Traceback (most recent")):
            break  # an outer exception whose name the pattern does not know: its traceback is not the message
        if not ln.startswith(("For further information", "File ", "^")):
            rest.append(ln)
    head = f"{m.group(1)}: {m.group(2)}" if m.group(2) else m.group(1)
    text = " ".join((head, *rest))
    return text[:limit]
