"""Preprocessing throughput: ``autopid preprocess`` next to a plain uproot + NumPy + pyarrow
script doing the same work, on the same ALICE-like files, in one run.

    python benchmarks/preprocess_throughput.py [--entries 200000] [--files 4] [--repeat 5]

The plain script reads the same branches, applies the same selection and missing rules,
splits by the same (run, event) hash, fits the normalisation on the train split and writes
one Parquet file per (file, split). ``measure(entries, files)`` returns
``{"autopid_eps", "plain_eps", "ratio"}`` for other scripts.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import uproot

from autopid.config.dataset import Cut, DatasetConfig
from autopid.features import apply_transform
from autopid.preprocess import preprocess
from autopid.preprocess._split import SPLIT_NAMES, assign_split
from autopid.simulate import ALICE, AliceSimConfig, simulate_period
from autopid.testing import dataset_for


def write_data(out: Path, entries: int, files: int) -> tuple[DatasetConfig, int]:
    """About ``entries`` ALICE-like entries in ``files`` files (rounded down to even: one MC
    and one Data file per run); the dataset and the number of files."""
    runs = max(1, files // 2)
    simulate_period(ALICE, AliceSimConfig(), out, "P26a", runs=runs,
                    events_per_run=max(1, entries // (2 * runs)), seed=1)
    return dataset_for("alice", out), 2 * runs


def _mask(values: np.ndarray, cut: Cut) -> np.ndarray:
    ops = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
           "==": np.equal, "!=": np.not_equal, "abs<": lambda x, v: np.abs(x) < v}
    with np.errstate(invalid="ignore"):
        if cut.op == "between":
            lo, hi = cut.value  # type: ignore[misc]
            return (values >= np.float64(lo)) & (values <= np.float64(hi))
        if cut.op == "in":
            return np.isin(values, np.asarray(cut.value, dtype=np.float64))
        return ops[cut.op](values, np.float64(cut.value))


def plain(cfg: DatasetConfig, out: Path) -> int:
    """The reference: one process, one file after the other, scalar branches (ALICE-like).
    Returns the entries read."""
    entries = 0
    sums: dict[str, np.ndarray] = {}
    for src in cfg.sources:
        truth = [cfg.truth.label.mc] if src.domain == "mc" else [cfg.truth.label.data or ""]
        truth += [t.mc if src.domain == "mc" else (t.data or "") for t in cfg.truth.extra.values()]
        for i, path in enumerate(sorted(Path(p) for f in src.files for p in glob.glob(f.replace("{period}", "*")))):
            names = list(dict.fromkeys([cfg.run_branch, cfg.event_branch, *cfg.features,
                                        *(c.branch for c in cfg.selection),
                                        *(r.when.branch for r in cfg.missing_rules), *truth]))
            # the reader and Parquet encoding autopid uses: the ratio measures autopid's overhead
            fh = uproot.open(path, handler=uproot.source.file.MemmapSource)
            a = fh[src.tree].arrays(names, library="np")
            n = len(a[cfg.run_branch])
            entries += n
            keep = np.ones(n, dtype=bool)
            for cut in cfg.selection:
                keep &= _mask(a[cut.branch], cut)
            feats = {b: a[b].astype(np.float64) for b in cfg.features}
            for rule in cfg.missing_rules:
                hit = _mask(a[rule.when.branch], rule.when)
                for col in rule.columns:
                    feats[col][hit] = np.nan
            run = a[cfg.run_branch][keep].astype(np.int64)
            event = a[cfg.event_branch][keep].astype(np.int64)
            split = assign_split(run, event, train=cfg.split.train, validation=cfg.split.validation,
                                 seed=cfg.split.seed)
            cols = {"run": run, "event": event, **{b: v[keep].astype(np.float32) for b, v in feats.items()},
                    **{t: a[t][keep].astype(np.int64) for t in truth}}
            table = pa.table(cols)
            ints = ["run", "event", *truth]  # dictionary-encode ids and labels only
            for s, name in enumerate(SPLIT_NAMES):
                idx = np.flatnonzero(split == s)
                d = out / name / src.domain
                d.mkdir(parents=True, exist_ok=True)
                pq.write_table(table.take(idx), d / f"part-{i:05d}.parquet", use_dictionary=ints)
                if name == "train" and src.domain in cfg.normalisation_domains:
                    for b in cfg.features:
                        x = apply_transform(cols[b][idx].astype(np.float64), cfg.transforms.get(b))
                        x = x[np.isfinite(x)]
                        sums[b] = sums.get(b, np.zeros(3)) + (x.size, x.sum(), np.square(x).sum())
    assert all(v[0] > 0 for v in sums.values())
    return entries


def _autopid(cfg: DatasetConfig, cache: Path) -> int:
    shutil.rmtree(cache, ignore_errors=True)  # a cache miss, and no remembered file hashes
    res = preprocess(cfg, cache_root=cache)
    assert not res.cache_hit
    return int(res.manifest["entries"])


def _cpu() -> float:
    """CPU seconds of this process and its reaped children: unlike the wall time, hardly
    moved by other work on the machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(entries: int, files: int, repeat: int = 3) -> dict[str, Any]:
    """Entries/s of both (best of ``repeat``), run in turns so that both see the same load;
    ``ratio`` from the best times, ``ratio_median`` the median of the per-turn ratios,
    ``cpu_ratio`` plain CPU seconds over autopid's (best of each)."""
    with tempfile.TemporaryDirectory(prefix="autopid-bench-pre-") as tmp:
        root = Path(tmp)
        cfg, files = write_data(root / "data", entries, files)
        plain(cfg, root / "warm")  # page cache and lazy imports, for neither side to pay
        wall: dict[str, list[float]] = {"autopid": [], "plain": []}
        cpu: dict[str, list[float]] = {"autopid": [], "plain": []}
        n = 0
        for _ in range(repeat):
            for name in ("autopid", "plain"):
                shutil.rmtree(root / "out", ignore_errors=True)
                t0, c0 = time.perf_counter(), _cpu()
                n = _autopid(cfg, root / "out") if name == "autopid" else plain(cfg, root / "out")
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(_cpu() - c0)
    turns = sorted(p / a for a, p in zip(wall["autopid"], wall["plain"]))
    return {"entries": n, "files": files, "autopid_eps": n / min(wall["autopid"]),
            "plain_eps": n / min(wall["plain"]), "ratio": min(wall["plain"]) / min(wall["autopid"]),
            "ratio_median": turns[len(turns) // 2], "autopid_cpu_s": min(cpu["autopid"]),
            "plain_cpu_s": min(cpu["plain"]), "cpu_ratio": min(cpu["plain"]) / min(cpu["autopid"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    load = os.getloadavg()
    r = measure(a.entries, a.files, a.repeat)
    print(f"{r['entries']} entries in {r['files']} files, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':<30}{'entries/s':>12}")
    print(f"{'autopid preprocess (miss)':<30}{r['autopid_eps']:>12,.0f}")
    print(f"{'plain uproot+numpy+pyarrow':<30}{r['plain_eps']:>12,.0f}")
    print(f"{'ratio autopid/plain (best)':<30}{r['ratio']:>12.2f}")
    print(f"{'ratio autopid/plain (median)':<30}{r['ratio_median']:>12.2f}")
    print(f"CPU seconds: autopid {r['autopid_cpu_s']:.3f}, plain {r['plain_cpu_s']:.3f} "
          f"(plain/autopid {r['cpu_ratio']:.2f})")


if __name__ == "__main__":
    main()
