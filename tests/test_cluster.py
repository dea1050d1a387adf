"""The same commands on real clusters: a two-node Ray cluster (two `ray start` processes,
token authentication on) and a Dask cluster (`dask scheduler` + two `dask worker`), all on
loopback. Every process this module starts is stopped by its process group id."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autopid.config.dataset import DatasetConfig
from autopid.testing import write_dataset_yaml

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
EXE = str(BIN / "autopid")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in reversed(procs):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(0.2)


@pytest.fixture()
def ray_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head node and a worker node, one CPU each, the worker with a custom resource label."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
    # a temp dir of its own: `ray start` records "the current cluster" under it, and a
    # plain ray.init() elsewhere must not find this one
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    procs = [_start([str(BIN / "ray"), "start", "--head", "--temp-dir", temp, "--node-ip-address", "127.0.0.1",
                     "--port", str(port),
                     "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                     "--resources", json.dumps({"node_head": 1}), *common], tmp_path / "head.log", env)]
    try:
        _wait_for(lambda: _nodes(address, env) >= 1, 120, tmp_path / "head.log")
        procs.append(_start([str(BIN / "ray"), "start", "--address", address, "--node-ip-address", "127.0.0.1",
                             "--resources", json.dumps({"node_b": 1}), *common], tmp_path / "worker.log", env))
        _wait_for(lambda: _nodes(address, env) >= 2, 120, tmp_path / "worker.log")
        yield address, env
    finally:
        _stop_all(procs)
        shutil.rmtree(temp, ignore_errors=True)


def _nodes(address: str, env: dict[str, str]) -> int:
    code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


def _wait_for(cond, seconds: float, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + seconds
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"cluster did not come up; {log}:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def test_search_spreads_trials_over_two_ray_nodes(ray_cluster: tuple[str, dict[str, str]],
                                                  alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    address, env = ray_cluster
    dataset = write_dataset_yaml(alice_cfg, tmp_path / "alice.yaml")
    space = {
        "name": "cluster",
        "base": {"dataset": str(dataset), "species": "proton", "model": {"family": "fse", "params": {"num_layers": 1}},
                 "training": {"epochs": 2, "batch_size": 128, "max_train_rows": 1000, "max_eval_rows": 500},
                 "scaling": {"num_workers": 1, "cpus_per_worker": 1}, "cache_dir": str(tmp_path / "cache")},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
        "budget": {"num_samples": 4},
        # no early stopping here: every trial should run, so both nodes get work
        "scheduler": {"grace_period": 2, "reduction_factor": 2},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    out = tmp_path / "search"
    run = subprocess.run([EXE, "search", "--space", str(tmp_path / "space.yaml"), "--out", str(out),
                          "--address", address, "-q"], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads((out / "studies" / "proton-LHC26a" / "summary.json").read_text())
    assert summary["max_concurrent_trials"] == 2  # from the CPUs the cluster reports
    trials = pd.read_csv(out / "studies" / "proton-LHC26a" / "trials.csv")
    assert len(trials) == 4 and (trials["status"] != "failed").all()

    # Ray's own records: where did the trials train? (a one-worker trial trains in its Tune
    # trial actor, a process of the node that had a free CPU; each node has one)
    code = f"""
import json, ray
from ray.util.state import list_actors, list_nodes
ray.init(address={address!r}, logging_level="ERROR")
nodes = {{n.node_id: n.resources_total for n in list_nodes(address={address!r}, detail=True)}}
actors = list_actors(address={address!r}, detail=True, limit=1000)
print(json.dumps({{"nodes": nodes, "actors": [[a.class_name, a.node_id] for a in actors]}}))
"""
    rec = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert rec.returncode == 0, rec.stderr[-3000:]
    got = json.loads(rec.stdout.strip().splitlines()[-1])
    labelled = {nid: next((k for k in ("node_head", "node_b") if k in res), None) for nid, res in got["nodes"].items()}
    trainers = [nid for cls, nid in got["actors"] if "run_trial" in cls or cls in ("ImplicitFunc", "RayTrainWorker")]
    used = {labelled[nid] for nid in trainers}
    assert len(trainers) >= 2, got["actors"]
    assert used == {"node_head", "node_b"}, f"trials trained only on {used}: {got['actors']}"


def test_search_refuses_a_cluster_without_its_token(ray_cluster: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = ray_cluster
    bad = {**env, "RAY_AUTH_TOKEN": "0" * 32}
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(ray.cluster_resources())"
    out = subprocess.run([sys.executable, "-c", code], env=bad, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0


def test_preprocessing_on_a_dask_cluster_uses_both_workers(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    env = {**os.environ}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                     "--no-dashboard"], tmp_path / "scheduler.log", env)]
    try:
        for name in ("w1", "w2"):
            procs.append(_start([str(BIN / "dask"), "worker", address, "--name", name, "--nthreads", "1",
                                 "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "2GiB"],
                                tmp_path / f"{name}.log", env))
        from distributed import Client

        deadline = time.time() + 90
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < 2:
                assert time.time() < deadline, (tmp_path / "w1.log").read_text()[-2000:]
                time.sleep(0.5)
            workers = {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}
        dataset = write_dataset_yaml(alice_cfg.model_copy(update={"chunk_size": 1000}), tmp_path / "alice.yaml")
        run = subprocess.run([EXE, "preprocess", "--data", str(dataset), "--cache-dir", str(tmp_path / "cache"),
                              "--scheduler", address], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        _stop_all(procs)
    (manifest_path,) = (tmp_path / "cache" / "preprocess").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert set(manifest["hosts"]) == set(workers.values()), (manifest["hosts"], workers)
