"""Wall time of the same small search on a local Ray (one node, 2 CPUs) and on a two-node
Ray cluster started with `ray start` (1 CPU each, same total), measured in one run.
The point is that it works and what the cluster costs, not a speed-up.

    python benchmarks/cluster_search.py [--trials 4] [--events-per-run 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from autopid.simulate import ALICE, AliceSimConfig, simulate_period
from autopid.testing import dataset_for, write_dataset_yaml

BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _search(space: Path, out: Path, env: dict[str, str], address: str | None) -> float:
    cmd = [str(BIN / "autopid"), "search", "--space", str(space), "--out", str(out), "-q"]
    if address:
        cmd += ["--address", address]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--events-per-run", type=int, default=3000)
    ap.add_argument("--out", default="/tmp/autopid-bench-cluster")
    a = ap.parse_args()
    out = Path(a.out)
    shutil.rmtree(out / "searches", ignore_errors=True)
    if not (out / "alice" / "LHC26a" / "period.json").exists():
        simulate_period(ALICE, AliceSimConfig(), out / "alice", "LHC26a", runs=2, events_per_run=a.events_per_run, seed=1)
    ds = write_dataset_yaml(dataset_for("alice", out / "alice"), out / "alice.yaml")
    space = {
        "name": "bench", "base": {
            "dataset": str(ds), "species": "proton", "model": {"family": "fse", "params": {"num_layers": 1}},
            "training": {"epochs": 2, "batch_size": 128, "max_train_rows": 2000, "max_eval_rows": 1000},
            "scaling": {"num_workers": 1, "cpus_per_worker": 1}, "cache_dir": str(out / "cache")},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
        "budget": {"num_samples": a.trials}, "scheduler": {"grace_period": 2, "reduction_factor": 2}}
    (out / "space.yaml").write_text(yaml.safe_dump(space))
    # token authentication, one token for both nodes and the driver (as a real cluster would)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    if not (out / "cache").exists():
        _search(out / "space.yaml", out / "searches" / "warm", env, None)  # fills the preprocessing cache
    one = _search(out / "space.yaml", out / "searches" / "one-node", env, None)

    port, temp = _port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--node-ip-address", "127.0.0.1"]
    procs = [subprocess.Popen([str(BIN / "ray"), "start", "--head", "--port", str(port), "--temp-dir", temp,
                               "--include-dashboard", "false", *common], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(8)
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--address", address, *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(8)
        two = _search(out / "space.yaml", out / "searches" / "two-node", env, address)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(3)
        shutil.rmtree(temp, ignore_errors=True)
    rows = []
    for name, wall in (("one-node", one), ("two-node", two)):
        s = json.loads((out / "searches" / name / "studies" / "proton-LHC26a" / "summary.json").read_text())
        rows.append((name, wall, s["wall_seconds"], s["mean_trial_overhead_s"], s["max_concurrent_trials"]))
    print(f"{a.trials} trials, FSE, 2 epochs, 2000 training rows; 2 CPUs in total either way")
    print(f"{'cluster':<10}{'command s':>11}{'tune s':>9}{'overhead/trial s':>18}{'concurrent':>12}{'ratio':>8}")
    for name, wall, tune_s, over, conc in rows:
        print(f"{name:<10}{wall:>11.1f}{tune_s:>9.1f}{over:>18.1f}{conc:>12}{wall / rows[0][1]:>8.2f}")


if __name__ == "__main__":
    main()
