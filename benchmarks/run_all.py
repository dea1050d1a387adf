"""Every speed figure of autopid next to the plain way of doing the same work, measured
side by side in one run, printed as one table and written as one JSON object.

    python benchmarks/run_all.py --quick --json results.json

--quick (about 10 minutes on 2 cores) uses smaller samples and fewer seeds. Keys of the
JSON object: trial_overhead_s, tune_trivial_trial_s, optuna_inprocess_trial_s,
trial_overhead_2workers_s, ray_train_trivial_2workers_trial_s, fse_train_ratio,
mda_train_ratio, preprocess_ratio, search_efficiency_fraction,
gpu_fse_events_per_s and gpu_mda_events_per_s (null without a CUDA device), load_average
(1-minute load at start and end), and the details of each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_training  # noqa: E402
import preprocess_throughput  # noqa: E402
import search_efficiency  # noqa: E402
import search_overhead  # noqa: E402
import training_throughput  # noqa: E402


def _row(work: str, autopid: str, plain: str, ratio: str) -> str:
    return f"| {work} | {autopid} | {plain} | {ratio} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples, 3 seeds for search efficiency")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()
    q = args.quick
    root = Path(tempfile.mkdtemp(prefix="autopid-bench-"))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    out: dict[str, Any] = {}

    trial = search_overhead.measure(trials=6, root=root / "search")
    out.update(trial_overhead_s=trial["trial_overhead_s"], tune_trivial_trial_s=trial["tune_trivial_trial_s"],
               optuna_inprocess_trial_s=trial["optuna_inprocess_trial_s"],
               trial_overhead_2workers_s=trial.get("trial_overhead_2workers_s"),
               ray_train_trivial_2workers_trial_s=trial.get("ray_train_trivial_2workers_trial_s"), trial=trial)
    fse = training_throughput.measure("fse", rows=4000 if q else 20000, epochs=2)
    mda = training_throughput.measure("mda", rows=4000 if q else 20000, epochs=2)
    out.update(fse_train_ratio=fse["ratio"], mda_train_ratio=mda["ratio"], fse_train=fse, mda_train=mda)
    prep = preprocess_throughput.measure(entries=200_000, files=4)
    out.update(preprocess_ratio=prep["ratio"], preprocess=prep)
    eff = search_efficiency.measure(seeds=3 if q else 5, trials=16, root=root / "efficiency")
    out.update(search_efficiency_fraction=eff["median_fraction"], search_efficiency=eff)
    gpu = None
    if gpu_training.torch.cuda.is_available():  # CPU stays the default; the GPU figures where there is one
        gpu = gpu_training.measure(root / "gpu", batch_sizes=(16384,), epochs=4, whole=False)
    out.update(gpu_fse_events_per_s=gpu and gpu["best"].get("fse"), gpu_mda_events_per_s=gpu and gpu["best"].get("mda"),
               gpu=gpu)
    out["load_average"] = {"start": load0, "end": os.getloadavg()[0]}
    out["seconds"] = time.perf_counter() - t0

    print(f"\nautopid benchmarks ({'quick' if q else 'full'}), {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {load0:.2f} -> {out['load_average']['end']:.2f}, {os.cpu_count()} CPUs\n")
    print(_row("work", "autopid", "the plain way, same work", "ratio"))
    print(_row("---", "---", "---", "---"))
    print(_row("one search trial (1 epoch, 2,000 rows), 1 worker", f"{trial['trial_s']:.2f} s, of which "
               f"training {trial['trial_train_s']:.2f} s", f"Optuna loop calling fit(): "
               f"{trial['optuna_inprocess_trial_s']:.2f} s; Tune trivial trial: {trial['tune_trivial_trial_s']:.2f} s",
               f"{trial['trial_s'] / trial['optuna_inprocess_trial_s']:.2f}x"))
    print(_row("per-trial overhead (trial minus training)", f"{trial['trial_overhead_s']:.2f} s",
               f"Tune trivial trial {trial['tune_trivial_trial_s']:.2f} s",
               f"{trial['trial_overhead_s'] / trial['tune_trivial_trial_s']:.2f}x"))
    if "trial_2workers_s" in trial:
        floor = trial["ray_train_trivial_2workers_trial_s"]
        print(_row("per-trial overhead, 2 Ray Train workers", f"{trial['trial_overhead_2workers_s']:.2f} s",
                   f"Tune trial running a trivial 2-worker TorchTrainer {floor:.2f} s",
                   f"{trial['trial_overhead_2workers_s'] / floor:.2f}x"))
    print(_row("FSE training step", f"{fse['autopid_eps']:.0f} events/CPU-s",
               f"bare loop {fse['bare_eps']:.0f}", f"{fse['ratio']:.2f}"))
    print(_row("MDA training step", f"{mda['autopid_eps']:.0f} events/CPU-s",
               f"bare loop on pre-built PyG batches {mda['bare_eps']:.0f}", f"{mda['ratio']:.2f}"))
    print(_row("preprocessing 200k ALICE-like entries, 4 files", f"{prep['autopid_eps']:.0f} entries/s",
               f"uproot + NumPy + pyarrow {prep['plain_eps']:.0f}/s", f"{prep['ratio']:.2f}"))
    print(_row("TPE+ASHA time to random search's best", f"{eff['median_fraction']:.0%} of random's wall time "
               f"(median of {len(eff['seeds'])} seeds)", "random search, same budget", "-"))
    if gpu is not None:
        fse_s, mda_s = (("failed" if v is None else f"{v:,.0f}") for v in (gpu["best"]["fse"], gpu["best"]["mda"]))
        print(_row(f"GPU training, batch 16,384 ({gpu['gpu']})", f"FSE {fse_s} tracks/s, MDA {mda_s} events/s",
                   "-", "-"))
    else:
        print(_row("GPU training", "no CUDA device here (benchmarks/gpu_training.py on one)", "-", "-"))
    print(f"\n{out['seconds']:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
