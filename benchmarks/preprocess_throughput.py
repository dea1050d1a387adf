"""Simulator events/s, preprocessing events/s next to a plain uproot read of the same
branches (same files, same run), and the cache-hit time.

    python benchmarks/preprocess_throughput.py [--events 100000] [--out /tmp/autopid-bench-pre]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import uproot

from autopid.preprocess import preprocess
from autopid.preprocess._chunk import chunk_branches
from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, simulate_period
from autopid.testing import dataset_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000, help="entries per run and domain")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default="/tmp/autopid-bench-pre")
    a = ap.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for name, exp, cfg in (("alice", ALICE, AliceSimConfig()), ("ams", AMS, AmsSimConfig())):
        n = 2 * a.runs * a.events
        t0 = time.perf_counter()
        simulate_period(exp, cfg, out / name, "P26a", runs=a.runs, events_per_run=a.events, seed=1)
        t_sim = time.perf_counter() - t0
        ds_cfg = dataset_for(name, out / name)
        t0 = time.perf_counter()
        for src in ds_cfg.sources:
            for path in sorted((out / name / "P26a" / src.domain).glob("*.root")):
                uproot.open(path)[src.tree].arrays(chunk_branches(ds_cfg, src.domain), library="np")
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = preprocess(ds_cfg, cache_root=out / "cache")
        t_pre = time.perf_counter() - t0
        t0 = time.perf_counter()
        hit = preprocess(ds_cfg, cache_root=out / "cache")
        t_hit = time.perf_counter() - t0
        assert hit.cache_hit and not first.cache_hit
        rows.append((name, n, n / t_sim, n / t_read, n / t_pre, t_pre / t_read, t_hit))
    print(f"{'experiment':<10}{'entries':>10}{'simulate/s':>14}{'uproot read/s':>16}{'preprocess/s':>15}"
          f"{'pre/read time':>15}{'cache hit s':>13}")
    for r in rows:
        print(f"{r[0]:<10}{r[1]:>10}{r[2]:>14,.0f}{r[3]:>16,.0f}{r[4]:>15,.0f}{r[5]:>15.2f}{r[6]:>13.3f}")


if __name__ == "__main__":
    main()
