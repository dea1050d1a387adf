"""Job files and deployment files of the auto-retraining: validated, parsed, scheduled."""

from __future__ import annotations

import configparser
import datetime as dt
import shlex
from pathlib import Path

import pytest
import yaml

from autopid.cli import main
from autopid.errors import ConfigError
from autopid.retrain.job import load_job, load_jobs
from autopid.retrain.scheduler import next_due
from autopid.retrain.testing import write_job, write_tiny_space

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def job_file(tmp_path: Path) -> Path:
    space = write_tiny_space(tmp_path / "space.yaml")
    return write_job(tmp_path / "job.yaml", data_root=tmp_path / "data", dataset="ams", space=space,
                     work=tmp_path / "work")


def test_shipped_jobs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # job files name paths relative to the repository root
    jobs = {job.name: job for _, job in load_jobs("jobs")}
    assert {"ams-phosphorus", "alice-proton"} <= set(jobs)
    ams, alice = jobs["ams-phosphorus"], jobs["alice-proton"]
    assert (ams.experiment, ams.family, ams.species) == ("ams", "mda", "phosphorus")
    assert (alice.experiment, alice.family, alice.species) == ("alice", "fse", "proton")
    for job in (ams, alice):
        assert "{period}" in job.periods.pattern and job.periods.complete_marker == "period.json"
        assert job.warm_start.enabled and job.search.trials >= 1
        assert job.validity.source == "manifest" and job.promotion.metric == "mc.auc"
    assert ams.schedule.cron and alice.schedule.every_s


@pytest.mark.parametrize(("edit", "message"), [
    (lambda j: j.update(bogus=1), r"bogus: unknown key; expected one of: .*cache_dir"),
    (lambda j: j["search"].update(trials="many"), r"search.trials: .*integer"),
    (lambda j: j["periods"].update(pattern="data/ams"), r"periods: .*\{period\} exactly once"),
    (lambda j: j.update(schedule={"cron": "61 * * * *"}), r"schedule: .*not a valid cron"),
    (lambda j: j.update(schedule={"cron": "0 * * * *", "every_s": 5}), r"schedule: .*exactly one of cron or every_s"),
    (lambda j: j["promotion"].update(guards=[{"name": "g", "path": "gap.gap"}]),
     r"promotion.guards.*higher_is_better: required key is missing"),
    (lambda j: j.update(experiment="alice"), r"experiment: 'alice', but dataset 'ams' is 'ams'"),
    (lambda j: j.update(family="fse"), r"family: 'fse', but dataset 'ams' is laid out for 'mda'"),
    (lambda j: j.update(species="unobtainium"), r"species: 'unobtainium' is not defined"),
    (lambda j: j["search"].update(overrides={"training.epochs": 0}), r"search.overrides: .*epochs"),
    (lambda j: j["lease"].update(heartbeat_s=10), r"lease: .*heartbeat_s must be shorter"),
])
def test_bad_job_is_refused_naming_file_and_key(job_file: Path, edit, message: str,  # type: ignore[no-untyped-def]
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(job_file.read_text())
    edit(data)
    job_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as err:
        load_job(job_file)
    assert str(err.value).startswith(str(job_file))
    assert main(["retrain", "--job", str(job_file), "--once"]) == 2
    assert str(job_file) in capsys.readouterr().err


def test_unsafe_yaml_is_refused(job_file: Path) -> None:
    job_file.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_job(job_file)


def test_duplicate_job_names_refused(job_file: Path, tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    for n in ("a", "b"):
        (tmp_path / "jobs" / f"{n}.yaml").write_text(job_file.read_text())
    with pytest.raises(ConfigError, match=r"b.yaml: name: job 'tiny-ams' is also defined in .*a.yaml"):
        load_jobs(tmp_path / "jobs")


def test_schedule_cron_in_utc_and_interval(job_file: Path) -> None:
    job = load_job(job_file)
    t0 = dt.datetime(2026, 11, 23, 10, 17, 5, tzinfo=dt.timezone.utc).timestamp()
    assert next_due(job, t0) == pytest.approx(t0 + 3600)
    cron = job.model_copy(update={"schedule": job.schedule.model_copy(update={"cron": "0 */6 * * *",
                                                                               "every_s": None})})
    assert dt.datetime.fromtimestamp(next_due(cron, t0), dt.timezone.utc) == dt.datetime(
        2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


# -- deployment files -------------------------------------------------------------------------

DEPLOY = ROOT / "deploy" / "retrain"


def _autopid_argv(argv: list[str]) -> list[str]:
    assert Path(argv[0]).name == "autopid", argv
    return argv[1:]


def _check_cli(args: list[str]) -> None:
    """The arguments must parse with autopid's own parser (no run)."""
    from autopid.cli import _parser

    ns = _parser().parse_args(args)
    assert ns.func is not None


def test_kubernetes_cronjob() -> None:
    doc = yaml.safe_load((DEPLOY / "cronjob.yaml").read_text())
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    from croniter import croniter

    assert croniter.is_valid(spec["schedule"]) and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    args = _autopid_argv(container["command"] + container["args"])
    assert args[:1] == ["retrain"] and "--once" in args and "--job" in args
    _check_cli(args)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(volumes) and all("persistentVolumeClaim" in v for v in volumes.values())
    # state, work dir and registry (the relative `registry` of the job file) are on the shared volume
    assert all(a.startswith(("sqlite:////mnt/autopid", "/mnt/autopid")) for a in args if "/mnt" in a)
    assert container["workingDir"].startswith(mounts["shared"])


def test_kuberay_rayjob() -> None:
    doc = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    args = _autopid_argv(shlex.split(spec["entrypoint"]))
    assert args[:1] == ["retrain"] and "--once" in args
    _check_cli(args)
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["persistentVolumeClaim"]["claimName"] == "autopid-shared"
    assert cluster["workerGroupSpecs"][0]["template"]["spec"]["volumes"] == head["volumes"]
    assert spec["shutdownAfterJobFinishes"] is True


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "autopid-scheduler.service")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    svc = unit["Service"]
    args = _autopid_argv(shlex.split(svc["ExecStart"]))
    assert args[:2] == ["scheduler", "run"] and "--jobs" in args
    _check_cli(args)
    assert svc["KillSignal"] == "SIGTERM" and int(svc["TimeoutStopSec"]) >= 60 and svc["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_job_space_and_warm_start_points(job_file: Path) -> None:
    from autopid.retrain.space import job_space, warm_points
    from autopid.search.space import load_search_space

    job = load_job(job_file)
    job = job.model_copy(update={"search": job.search.model_copy(update={"overrides": {"training.epochs": 2},
                                                                          "trials": 3})})
    space = load_search_space(job.search.space)
    a, b = job_space(job, space, "P2026a"), job_space(job, space, "P2026b")
    assert [(s.species, s.period) for s in a.studies] == [("phosphorus", "P2026a")]
    assert a.budget.num_samples == 3 and a.base["training"]["epochs"] == 2 and a.base["dataset"] == "ams"
    assert a.name == job.name and a.demo_data is None
    assert a.seed != b.seed  # each period's sampler explores new configurations
    base = a.train_config(a.studies[0], {}).model_dump(mode="json")
    points = warm_points(a, [
        {"training.lr": 1e-3, "model.params.gnn_hidden": 32.0},  # 32.0 as read back from a CSV
        {"training.lr": 1e-3},  # gnn_hidden taken from the base (16)
        {"training.lr": 5.0, "model.params.gnn_hidden": 16},  # outside the space now: dropped
        {"training.lr": 1e-3, "model.params.gnn_hidden": 32},  # a duplicate: dropped
    ], base)
    assert points == [{"model.params.gnn_hidden": 32, "training.lr": 1e-3},
                      {"model.params.gnn_hidden": 16, "training.lr": 1e-3}]
    assert isinstance(points[0]["model.params.gnn_hidden"], int)
