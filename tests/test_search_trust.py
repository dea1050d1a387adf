"""A search a user can trust: exact resume after kill -9 or Ctrl-C at several moments,
one search per directory, one definition of "best", no stall without a message, and
isolation from other Ray instances on the host. Real Ray, real Optuna, real trials."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autopid.config.dataset import DatasetConfig
from autopid.testing import write_dataset_yaml

EXE = str(Path(sys.executable).with_name("autopid"))
RAY = str(Path(sys.executable).with_name("ray"))
BUDGET = 8


@pytest.fixture(scope="module", autouse=True)
def _no_ray_in_this_process():
    import ray

    ray.shutdown()
    yield


@pytest.fixture(scope="module")
def dataset_yaml(alice_cfg: DatasetConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset_yaml(alice_cfg, tmp_path_factory.mktemp("ds") / "alice.yaml")


def _space(tmp_path: Path, dataset: Path, **over: object) -> Path:
    space = {
        "name": "trust",
        "base": {"dataset": str(dataset), "species": "proton", "model": {"family": "fse", "params": {"num_layers": 1}},
                 "training": {"epochs": 4, "batch_size": 64, "max_train_rows": 3000, "max_eval_rows": 600,
                              "signal_fraction": 0.3},
                 "scaling": {"num_workers": 1}, "cache_dir": str(tmp_path.parent / "cache")},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": {"training.lr": {"type": "loguniform", "low": 1e-5, "high": 3e-3},
                   "model.params.ff_channels": {"type": "categorical", "choices": [32, 64]},
                   "model.params.dropout": {"type": "uniform", "low": 0.0, "high": 0.3}},
        "budget": {"num_samples": BUDGET},
        "scheduler": {"grace_period": 1, "reduction_factor": 2},
    }
    space.update(over)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _states(db: Path) -> dict[int, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return dict(con.execute("select number, state from trials").fetchall())
    except sqlite3.Error:
        return {}


def _ended(db: Path) -> int:
    return sum(s in ("COMPLETE", "PRUNED", "FAIL") for s in _states(db).values())


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([EXE, *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended (rc {proc.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _kill_group(proc: subprocess.Popen, sig: int) -> int:
    """Ctrl-C reaches the whole foreground group (Ray's processes too), as a terminal sends
    it; ``kill`` (SIGTERM) only the driver; kill -9 the whole group."""
    try:
        if sig == signal.SIGTERM:
            os.kill(proc.pid, sig)
        else:
            os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the search left (Ray's processes)
        except ProcessLookupError:
            pass


def _snapshot(out: Path) -> dict[int, tuple]:
    """Ended trials: (state, value, tune trial id, epochs in its record)."""
    import optuna

    study = optuna.load_study(study_name="trust-proton-LHC26a", storage=f"sqlite:///{out / 'optuna.db'}")
    snap = {}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL"):
            rec = json.loads((out / "studies/proton-LHC26a/trials" / f"{t.number:04d}" / "record.json").read_text())
            snap[t.number] = (t.state.name, t.value, t.user_attrs.get("tune_trial_id"), rec["epochs_run"])
    return snap


def _check_finished(out: Path, before: dict[int, tuple]) -> None:
    import optuna

    sdir = out / "studies" / "proton-LHC26a"
    study = optuna.load_study(study_name="trust-proton-LHC26a", storage=f"sqlite:///{out / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states, states
    assert len(trials) == BUDGET, states  # a resumed trial keeps its number: no extra trials
    assert states.count("FAIL") == 0, [t.user_attrs.get("error") for t in trials]
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(params)) == BUDGET, "duplicate parameter sets"
    after = _snapshot(out)
    for number, snap in before.items():  # finished before the kill: neither lost nor run again
        assert after[number] == snap, (number, snap, after[number])
    rows = pd.read_csv(sdir / "trials.csv")
    assert list(rows["trial"]) == [t.number for t in trials]
    status = {"COMPLETE": "completed", "PRUNED": "stopped_early"}
    assert list(rows["status"]) == [status[s] for s in states]
    for t, (_, row) in zip(trials, rows.iterrows()):
        if t.state.name == "COMPLETE":
            assert row["best_objective"] == pytest.approx(t.value, abs=1e-12)
        rec = json.loads((sdir / "trials" / f"{t.number:04d}" / "record.json").read_text())
        assert row["epochs"] == rec["epochs_run"] and row["best_epoch"] == rec["best_epoch"]
    summary = json.loads((sdir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["trials"] == BUDGET
    assert summary["completed"] == (rows["status"] == "completed").sum()
    assert summary["stopped_early"] == (rows["status"] == "stopped_early").sum()
    best = rows.loc[rows["best_objective"].idxmax()]
    assert summary["best_trial"] == best["trial"] and summary["best_epoch"] == best["best_epoch"]
    assert summary["best_metrics"]["objective"] == pytest.approx(best["best_objective"])
    assert summary["best_params"] == study.trials[int(best["trial"])].user_attrs["params"]
    best_cfg = yaml.safe_load((sdir / "best_config.yaml").read_text())
    assert best_cfg["training"]["lr"] == pytest.approx(summary["best_params"]["training.lr"])
    # best_model.pt is the best trial's best epoch
    import torch

    rec = json.loads((sdir / "trials" / f"{int(best['trial']):04d}" / "record.json").read_text())
    kept = torch.load(sdir / "trials" / f"{int(best['trial']):04d}" / rec["model"], weights_only=True)
    model = torch.load(sdir / "best_model.pt", weights_only=True)
    assert all(torch.equal(model["state_dict"][k], v) for k, v in kept["state_dict"].items())


# kill moment -> (signal, condition on the Optuna database before the signal)
MOMENTS = {
    "kill9-first-trials-running": (signal.SIGKILL, lambda db: "RUNNING" in _states(db).values() and _ended(db) == 0),
    "kill9-mid-search": (signal.SIGKILL, lambda db: _ended(db) >= 3),
    "ctrl-c-mid-search": (signal.SIGINT, lambda db: _ended(db) >= 2),
    "sigterm-mid-search": (signal.SIGTERM, lambda db: _ended(db) >= 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_resume_is_exact_after_kill_or_ctrl_c(tmp_path: Path, dataset_yaml: Path, moment: str) -> None:
    sig, cond = MOMENTS[moment]
    space, out = _space(tmp_path, dataset_yaml), tmp_path / "search"
    proc = _start(["search", "--space", str(space), "--out", str(out)], tmp_path / "first.log")
    _wait(lambda: cond(out / "optuna.db"), proc, f"the moment {moment}")
    rc = _kill_group(proc, sig)
    log = (tmp_path / "first.log").read_text()
    if sig != signal.SIGKILL:
        assert rc == 128 + sig, log[-2000:]
        assert "--resume" in log and "interrupted" in log
        # Ctrl-C is not the end of the budget: no summary, trials cut short stay open
        assert not (out / "studies/proton-LHC26a/summary.json").exists()
    before = _snapshot(out)
    resumed = subprocess.run([EXE, "search", "--resume", str(out)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    _check_finished(out, before)


@pytest.mark.slow
def test_kill9_twice_then_resume(tmp_path: Path, dataset_yaml: Path) -> None:
    space, out = _space(tmp_path, dataset_yaml), tmp_path / "search"
    proc = _start(["search", "--space", str(space), "--out", str(out)], tmp_path / "a.log")
    _wait(lambda: _ended(out / "optuna.db") >= 2, proc, "2 trials")
    _kill_group(proc, signal.SIGKILL)
    proc = _start(["search", "--resume", str(out)], tmp_path / "b.log")
    _wait(lambda: _ended(out / "optuna.db") >= 5, proc, "5 trials")
    _kill_group(proc, signal.SIGKILL)
    before = _snapshot(out)
    resumed = subprocess.run([EXE, "search", "--resume", str(out), "-q"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_finished(out, before)


@pytest.mark.slow
def test_one_search_per_directory(tmp_path: Path, dataset_yaml: Path) -> None:
    space, out = _space(tmp_path, dataset_yaml), tmp_path / "search"
    proc = _start(["search", "--space", str(space), "--out", str(out)], tmp_path / "first.log")
    try:
        _wait(lambda: "RUNNING" in _states(out / "optuna.db").values(), proc, "a running trial")
        # frozen, it holds its lock without finishing the search while the others are refused
        # (on a busy machine, the refusals took longer than the rest of its small budget)
        os.kill(proc.pid, signal.SIGSTOP)
        for args in (["search", "--resume", str(out)], ["search", "--space", str(space), "--out", str(out)]):
            t0 = time.time()
            second = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)
            assert second.returncode != 0
            assert f"pid {proc.pid}" in second.stderr and "another search is running" in second.stderr, second.stderr
            assert time.time() - t0 < 30  # refused at once, before Ray starts
    finally:
        _kill_group(proc, signal.SIGKILL)
    # the lock died with its holder
    resumed = subprocess.run([EXE, "search", "--resume", str(out), "-q"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # and a finished search is not started again over itself
    again = subprocess.run([EXE, "search", "--space", str(space), "--out", str(out)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and "already holds a search" in again.stderr


@pytest.mark.slow
def test_stall_stops_with_a_message(tmp_path: Path, dataset_yaml: Path) -> None:
    """Trials that ask for more workers than the machine has: Ray waits forever; autopid
    says so and exits non-zero instead of hanging."""
    # 40 s: on a busy 2-core machine Ray Train's controller took more than 15 s to ask for its
    # workers' placement group, and the stall was reported before there was one to name
    # the space's own timeout is an hour: --stall-timeout replaces it for the run
    space = _space(tmp_path, dataset_yaml, budget={"num_samples": 2, "max_concurrent": 1, "stall_timeout_s": 3600})
    data = yaml.safe_load(space.read_text())
    data["base"]["scaling"] = {"num_workers": 3}
    space.write_text(yaml.safe_dump(data))
    out = tmp_path / "search"
    run = subprocess.run([EXE, "search", "--space", str(space), "--out", str(out), "--stall-timeout", "40"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "search stalled: no trial made progress" in run.stderr and "stall_timeout_s = 40;" in run.stderr
    assert "placement group is pending, asking for 3 x {'CPU': 1.0}" in run.stderr, run.stderr
    assert "--resume" in run.stderr
    assert not (out / "studies/proton-LHC26a/summary.json").exists()
    # and on --resume, where the space is the one recorded in the search directory
    run = subprocess.run([EXE, "search", "--resume", str(out), "--stall-timeout", "25"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "stall_timeout_s = 25;" in run.stderr, run.stderr[-3000:]


def _foreign_ray(tmp_path: Path, i: int) -> Path:
    temp = Path(f"/tmp/foreign-ray-{os.getpid()}-{i}")
    port = 6400 + (os.getpid() % 500) * 2 + i
    subprocess.run([RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--num-cpus=1",
                    f"--dashboard-port={port + 1000}", "--disable-usage-stats"], check=True,
                   capture_output=True, timeout=120)
    return temp


def _stop_foreign(temp: Path) -> None:
    # `ray stop` would stop every Ray of this user, autopid's included: stop by temp dir
    out = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True)
    for pid in out.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.mark.slow
def test_search_finishes_next_to_two_foreign_ray_instances(tmp_path: Path, dataset_yaml: Path) -> None:
    """Another user's Ray (and a stale `ray start`) on the host: autopid neither attaches to
    them nor gets confused by them, on the in-process path and on the Ray Train path."""
    foreign = [_foreign_ray(tmp_path, i) for i in range(2)]
    try:
        gcs = subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True, text=True).stdout.split()
        assert len(gcs) >= 2
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        for workers, n in ((1, 3), (2, 2)):
            space = _space(tmp_path, dataset_yaml, budget={"num_samples": n, "stall_timeout_s": 120})
            data = yaml.safe_load(space.read_text())
            data["base"]["scaling"] = {"num_workers": workers}
            data["base"]["training"]["epochs"] = 2
            space.write_text(yaml.safe_dump(data))
            out = tmp_path / f"search-{workers}"
            run = subprocess.run([EXE, "search", "--space", str(space), "--out", str(out)], capture_output=True,
                                 text=True, timeout=600, env=env)
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
            summary = json.loads((out / "studies/proton-LHC26a/summary.json").read_text())
            assert summary["trials"] == n and summary["failed"] == 0
            assert "multiple active Ray" not in (out / "ray.log").read_text()
        # the foreign instances are untouched: no autopid job ran there
        for temp in foreign:
            assert not list(temp.glob("session_latest/logs/*trial*"))
    finally:
        for temp in foreign:
            _stop_foreign(temp)


@pytest.mark.slow
def test_console_is_quiet_and_failures_are_named(tmp_path: Path, dataset_yaml: Path) -> None:
    """One line per trial event; a trial that raises is "failed" with its error, everywhere."""
    space = _space(tmp_path, dataset_yaml, budget={"num_samples": 5})
    data = yaml.safe_load(space.read_text())
    # each value alone makes a model (the space is checked value by value when it loads), but
    # 4 or 8 heads do not divide 6 channels, nor 8 heads 12: those trials raise in the model's
    # constructor
    data["params"]["model.params.num_heads"] = {"type": "categorical", "choices": [4, 8]}
    data["params"]["model.params.embed_channels"] = {"type": "categorical",
                                                     "choices": [[128, 32], [64, 6], [64, 12]]}
    space.write_text(yaml.safe_dump(data))
    out = tmp_path / "search"
    run = subprocess.run([EXE, "search", "--space", str(space), "--out", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (run.stdout + run.stderr).splitlines()
    rows = pd.read_csv(out / "studies/proton-LHC26a/trials.csv")
    failed = rows[rows["status"] == "failed"]
    assert 0 < len(failed) < 5, rows[["trial", "status", "param.model.params.num_heads"]]
    width = rows["param.model.params.embed_channels"].astype(str).str.extract(r"(\d+)\]$")[0].astype(int)
    assert ((width % rows["param.model.params.num_heads"] != 0) == (rows["status"] == "failed")).all(), rows
    assert failed["error"].str.startswith("AssertionError: embed_dim must be divisible").all(), failed["error"]
    assert failed["error"].str.contains("divisible").all(), failed["error"]
    for number in failed["trial"]:
        assert any(f"trial {number} failed:" in ln and "divisible" in ln for ln in lines), "\n".join(lines)
    summary = json.loads((out / "studies/proton-LHC26a/summary.json").read_text())
    assert summary["failed"] == len(failed) and summary["best_trial"] not in set(failed["trial"])
    events = 5 + int(rows["epochs"].sum()) + 5  # started, each epoch, ended
    assert len(lines) <= events + 10, "\n".join(lines)
    assert not any("Trial status" in ln or "╭" in ln or "Traceback" in ln for ln in lines), "\n".join(lines)
    table = [ln for ln in run.stdout.splitlines() if "best model" not in ln]
    assert table and all(len(ln) <= 100 for ln in table)
    assert f"best model {out}/studies/proton-LHC26a/best_model.pt" in run.stdout
    assert "Traceback" in (out / "ray.log").read_text()  # the details are kept, off the console
    # the output options work before the command too
    again = subprocess.run([EXE, "-q", "search", "--resume", str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trial" not in again.stderr


@pytest.mark.slow
def test_two_searches_on_one_shared_storage_keep_their_own_trials(tmp_path: Path, dataset_yaml: Path) -> None:
    """A team's shared Optuna storage (here one SQLite file): a search of the same space,
    started while another one's trials are open (that one killed with -9 mid-search), gets
    a study of its own instead of taking the other's open trials for its own cut-short ones;
    the killed one then resumes its own."""
    import optuna

    space, db = _space(tmp_path, dataset_yaml, budget={"num_samples": 4}), tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    first = _start(["search", "--space", str(space), "--out", str(tmp_path / "a"), "--storage", url],
                   tmp_path / "a.log")
    _wait(lambda: _ended(db) >= 1 and "RUNNING" in _states(db).values(), first, "the first search mid-way")
    _kill_group(first, signal.SIGKILL)
    logs = []
    for args in (["--space", str(space), "--out", str(tmp_path / "b"), "--storage", url],
                 ["--resume", str(tmp_path / "a")]):
        done = subprocess.run([EXE, "search", *args, "-q"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        logs.append(done.stderr)
    names = {}
    for d in ("a", "b"):
        sdir = tmp_path / d / "studies" / "proton-LHC26a"
        names[d] = json.loads((sdir / "summary.json").read_text())["optuna_study"]
        trials = optuna.load_study(study_name=names[d], storage=url).get_trials(deepcopy=False)
        assert [t.state.name for t in trials].count("RUNNING") == 0 and len(trials) == 4, names[d]
        rows = pd.read_csv(sdir / "trials.csv")
        assert len(rows) == 4 and (rows["epochs"] > 0).all(), rows  # every trial ran here
    assert names["a"] == "trust-proton-LHC26a" and names["b"].startswith("trust-proton-LHC26a-")
    assert "already holds a study" in logs[0]
