"""Prometheus metrics: the endpoint, the deploy/ files, and a real Prometheus scraping a search."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from autopid.config.dataset import DatasetConfig
from autopid.monitoring import metric_names, metrics, push, serve
from autopid.preprocess import preprocess
from autopid.testing import write_dataset_yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "autopid.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
EXE = str(Path(sys.executable).with_name("autopid"))
METRIC_RE = re.compile(r"\bautopid_[a-z_]+")

# Series that a search does not produce: their panels and alerts are valid but empty here.
NOT_FROM_A_SEARCH = {
    "autopid_scheduler_": "scheduler metrics come from `autopid scheduler run`, not scraped in this test",
    "autopid_registry_": "registry metrics are set by publishing, which a search does not do",
    "autopid_inference_": "inference metrics come from a process that scores tracks",
    "autopid_trials_failed": "no trial fails in this search",
}


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.read().decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _panel_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]


def _alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(r["alert"], r["expr"]) for g in groups for r in g["rules"]]


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_endpoint_binds_loopback_and_nothing_starts_on_import() -> None:
    code = ("import threading, autopid, autopid.monitoring, autopid.search.runner, autopid.publish.predict; "
            "print(threading.active_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1", "importing autopid started a thread"
    server = serve(0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        text = _get(server.url)
    finally:
        server.close()
    exposed = {f.name for f in text_string_to_metric_families(text)}
    # the text parser drops the _total suffix of counters
    assert {n.removesuffix("_total") for n in metric_names()} <= exposed
    assert "process_cpu_seconds" in exposed


def test_preprocessing_counts_cache_hits_and_misses(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    labels = {"experiment": "alice", "dataset": alice_cfg.name}
    hits, misses = _sample("autopid_preprocess_cache_hits_total", **labels), \
        _sample("autopid_preprocess_cache_misses_total", **labels)
    first = preprocess(alice_cfg, cache_root=tmp_path)
    second = preprocess(alice_cfg, cache_root=tmp_path)
    assert not first.cache_hit and second.cache_hit
    assert _sample("autopid_preprocess_cache_misses_total", **labels) == misses + 1
    assert _sample("autopid_preprocess_cache_hits_total", **labels) == hits + 1
    assert _sample("autopid_preprocess_events_per_second", **labels) > 1000


def test_dashboard_and_alerts_use_only_metrics_that_exist() -> None:
    known = set(metric_names())
    # histogram series carry _bucket/_sum/_count suffixes
    known |= {f"{n}_{s}" for n in known for s in ("bucket", "sum", "count")}
    exprs = _panel_exprs() + _alert_exprs()
    assert len(_panel_exprs()) >= 20 and len(_alert_exprs()) >= 5
    for title, expr in exprs:
        used = set(METRIC_RE.findall(expr))
        assert used or "up{" in expr, f"{title}: no autopid metric in {expr!r}"
        assert used <= known, f"{title}: unknown metric(s) {sorted(used - known)} in {expr!r}"
    covered = {m for _, e in exprs for m in METRIC_RE.findall(e)}
    missing = {n for n in metric_names() if not any(c.startswith(n) for c in covered)}
    assert not missing, f"metrics without a panel or alert: {sorted(missing)}"


@pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not installed")
def test_promtool_accepts_the_configuration() -> None:
    for args in (["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                 ["check", "rules", str(ALERTS)]):
        out = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def _start(cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_http(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            _get(url, timeout=1)
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.skipif(shutil.which("prometheus-pushgateway") is None and not os.environ.get("CI"),
                    reason="prometheus-pushgateway not installed")
def test_push_to_a_real_pushgateway(tmp_path: Path) -> None:
    port = _free_port()
    gw = _start(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "gw.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/-/ready", 30)
        metrics.PROMOTIONS.labels("test-job", "ams", "phosphorus").inc()
        push(f"127.0.0.1:{port}", job="autopid_retrain", grouping={"retrain_job": "test-job"})
        text = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        _stop(gw)
    pushed = [s for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "autopid_scheduler_promotions_total" and s.labels.get("species") == "phosphorus"]
    assert pushed and pushed[0].value >= 1 and pushed[0].labels["job"] == "autopid_retrain"


def _query(base: str, expr: str, at: float) -> dict[str, Any]:
    q = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    return json.loads(_get(f"{base}/api/v1/query?{q}"))


def _lhs(expr: str) -> str:
    """The measured side of an alert (``x > 0.2`` -> ``x``), to check it has data."""
    m = re.match(r"^(.*?)\s*(>=|>|==|<)\s*[\d.\s*]+$", expr.strip(), re.S)
    return m.group(1) if m else expr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None and not os.environ.get("CI"),
                    reason="prometheus not installed (.ci/run installs it)")
def test_real_prometheus_scrapes_a_search(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    dataset = write_dataset_yaml(alice_cfg, tmp_path / "alice.yaml")
    space = {
        "name": "metrics",
        "base": {"dataset": str(dataset), "species": "proton",
                 "model": {"family": "fse", "params": {"num_layers": 1}},
                 "training": {"epochs": 2, "batch_size": 128, "max_train_rows": 1000, "max_eval_rows": 500,
                              "lambda_max": 0.3},
                 "scaling": {"num_workers": 1}, "cache_dir": str(tmp_path / "cache")},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
        "budget": {"num_samples": 3},
        "scheduler": {"grace_period": 1, "reduction_factor": 2},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    app_port, prom_port = _free_port(), _free_port()
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["scrape_configs"] = [{"job_name": "autopid-search", "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    base = f"http://127.0.0.1:{prom_port}"
    prom = _start(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                  tmp_path / "prometheus.log")
    search_dir = tmp_path / "search"
    search = _start([EXE, "search", "--space", str(tmp_path / "space.yaml"), "--out", str(search_dir),
                     "--metrics-port", str(app_port), "--metrics-linger", "30", "-q"], tmp_path / "search.log",
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_http(f"{base}/-/ready", 60)
        summary = search_dir / "studies" / "proton-LHC26a" / "summary.json"
        deadline = time.time() + 480
        while not summary.is_file():
            assert search.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
            assert time.time() < deadline, (tmp_path / "search.log").read_text()[-3000:]
            time.sleep(1)
        assert f"metrics: http://127.0.0.1:{app_port}/metrics" in (tmp_path / "search.log").read_text()
        time.sleep(3)  # a few more scrapes after the last trial ended
        exposed = _get(f"http://127.0.0.1:{app_port}/metrics")
        at = time.time()
        time.sleep(2)
        results = {title: _query(base, expr, at) for title, expr in _panel_exprs()}
        alert_results = {name: (_query(base, expr, at), _query(base, _lhs(expr), at)) for name, expr in _alert_exprs()}
        rules = json.loads(_get(f"{base}/api/v1/rules"))
    finally:
        _stop(search)
        _stop(prom)

    # names and labels, straight from the endpoint
    study = {"experiment": "alice", "species": "proton", "period": "LHC26a", "model": "fse"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(exposed) for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), float("nan"))

    assert value("autopid_trials_started_total", **study) == 3
    assert value("autopid_trials_completed_total", **study) + value("autopid_trials_stopped_early_total", **study) == 3
    assert value("autopid_trials_running", **study) == 0
    trials = {dict(k[1])["trial"] for k in samples if k[0] == "autopid_validation_auc"}
    assert len(trials) == 3
    for name in ("autopid_validation_auc", "autopid_domain_accuracy", "autopid_adversarial_lambda",
                 "autopid_training_events_per_second"):
        got = [v for (n, lab), v in samples.items() if n == name and dict(lab).get("species") == "proton"]
        # a trial stopped after the unadapted warm-up epoch reports lambda 0
        positive = [v > 0 for v in got] if name != "autopid_adversarial_lambda" else [v >= 0 for v in got]
        assert got and all(positive) and any(v > 0 for v in got), name
    assert 0.5 < value("autopid_study_best_objective", **study) <= 1.0
    assert value("autopid_epoch_duration_seconds_count", **study) >= 3
    assert value("autopid_preprocess_cache_misses_total", experiment="alice", dataset=alice_cfg.name) == 1

    # every dashboard expression through Prometheus's HTTP API
    for title, res in results.items():
        expr = dict(_panel_exprs())[title]
        assert res["status"] == "success", (title, res)
        if not res["data"]["result"]:
            reasons = [r for prefix, r in NOT_FROM_A_SEARCH.items() if prefix in expr]
            assert reasons, f"panel {title!r}: {expr!r} returned no data"
    for name, (res, lhs) in alert_results.items():
        expr = dict(_alert_exprs())[name]
        assert res["status"] == "success" and lhs["status"] == "success", (name, res, lhs)
        if name == "AutopidTargetDown":
            assert lhs["data"]["result"] and not res["data"]["result"]  # up == 1 for the search
        elif not lhs["data"]["result"]:
            assert [r for p, r in NOT_FROM_A_SEARCH.items() if p in expr], f"alert {name}: {expr!r} has no data"
    loaded = {r["name"]: r for g in rules["data"]["groups"] for r in g["rules"]}
    assert set(loaded) == {n for n, _ in _alert_exprs()}
    assert all(r["health"] == "ok" for r in loaded.values()), loaded
