"""``predict`` throughput (entries/s) of published FSE and MDA models on a simulated Data
file, with the selection the model carries (entries kept, dropped per cut) and without.

    python benchmarks/predict_throughput.py [--events-per-run 50000] [--threads N] [--json FILE]

ALICE-like (FSE) and AMS-like (MDA) periods are simulated (2 runs each), preprocessed with
the built-in datasets (their real preselection: for AMS phosphorus, inner-tracker charge
in [14.5, 15.6] and rigidity > 2), a model of the default size is trained for one short
epoch (throughput does not depend on the weights) and exported as ``autopid models
publish`` exports it; then one Data file (one run) is scored by ``Predictor.predict`` from
the ROOT file, best of ``--repeat``, in this process (the start-up and the ONNX Runtime
session are not counted; ``autopid predict`` adds about 1 s of imports). The share of
the signal species by the hidden truth of simulated Data (evaluation only) is printed
before and after the selection.

``measure(...) -> dict`` returns the figures (``run_all.py`` style).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

SMALL = {  # --quick: sizes of the test suite's models (for a smoke run)
    "fse": {"embed_channels": [32, 16], "ff_channels": 32, "num_layers": 1, "pool_channels": 16,
            "classifier_channels": 16},
    "mda": {"token_channels": 16, "gnn_hidden": 16, "gnn_layers": 2, "cnn_channels": 4, "mlp_hidden": 16,
            "classifier_channels": 16},
}
SETUPS = {  # family: experiment, period, species, tree, hidden truth branch, signal codes
    "fse": ("alice", "LHC26a", "proton", "O2pidtracks", "hidden_fPdgCode", (2212, -2212)),
    "mda": ("ams", "P2026a", "phosphorus", "amstree", "hidden_Z", (15,)),
}


def _export(family: str, out: Path, events_per_run: int, quick: bool, threads: int | None) -> Path:
    """Simulate, preprocess, train (or reuse the model.pt) and export; the export directory."""
    import torch

    from autopid.data import PreprocessedDataset
    from autopid.preprocess import preprocess
    from autopid.publish.onnx_export import export_model
    from autopid.simulate import EXPERIMENTS, simulate_period
    from autopid.testing import dataset_for
    from autopid.train import artifacts
    from autopid.train.config import TrainConfig
    from autopid.train.fit import fit

    exp, period, species, *_ = SETUPS[family]
    data = out / f"{exp}-{events_per_run}"
    if not (data / period / "period.json").exists():
        sim = EXPERIMENTS[exp]
        simulate_period(sim, sim.config_type(), data, period, runs=2, events_per_run=events_per_run, seed=5)
    ds = PreprocessedDataset(preprocess(dataset_for(exp, data), cache_root=out / "cache").path)
    model_pt = out / f"{family}-{'small' if quick else 'default'}-{ds.manifest['key'][:12]}.pt"
    if not model_pt.exists():
        torch.set_num_threads(threads or (os.cpu_count() or 1))
        params = SMALL[family] if quick else {}
        cfg = TrainConfig(dataset=exp, species=species, model={"family": family, "params": params},
                          training={"epochs": 1, "max_train_rows": 600 if quick else 2000,
                                    "max_eval_rows": 300 if quick else 1000, "batch_size": 128, "lambda_max": 0.3})
        model, _ = fit(cfg, ds)
        artifacts.save_atomic(artifacts.model_payload(model, cfg, ds), model_pt)
    export = out / f"export-{model_pt.stem}"
    shutil.rmtree(export, ignore_errors=True)
    return export_model(model_pt, ds, export, threads=threads).directory


def _timed(fn: Any, repeat: int) -> tuple[float, Any]:
    fn()  # warm-up: file cache, ONNX Runtime's first-run allocations
    best, result = float("inf"), None
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def measure(out: str | Path = "/tmp/autopid-bench-predict", *, events_per_run: int = 50_000,
            threads: int | None = None, repeat: int = 3, quick: bool = False) -> dict[str, Any]:
    """Entries/s of FSE and MDA ``predict`` on one simulated Data file, with the selection
    (kept, dropped per cut) and without it (``--no-selection``)."""
    import uproot

    from autopid.publish.predict import Predictor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"threads": threads, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    for family, (exp, period, _, tree, truth, codes) in SETUPS.items():
        export = _export(family, out, events_per_run, quick, threads)
        path = min((out / f"{exp}-{events_per_run}" / period / "data").glob("*.root"))
        pred = Predictor(export, threads=threads)
        sec, kept = _timed(lambda p=pred, f=path: p.predict(f), repeat)
        sec_all, _ = _timed(lambda p=pred, f=path: p.predict(f, apply_selection=False), repeat)
        rep = kept.selection
        hidden = np.isin(uproot.open(path)[tree][truth].array(library="np"), codes)
        res[family] = {
            "file": str(path), "model": str(export), "entries": rep.entries, "kept": rep.kept,
            "dropped": {c.label: c.dropped for c in rep.cuts},
            "seconds": sec, "entries_per_s": rep.entries / sec,
            "seconds_no_selection": sec_all, "entries_per_s_no_selection": rep.entries / sec_all,
            "signal_share_hidden_truth": {"all": float(hidden.mean()), "kept": float(hidden[kept.entry].mean())},
            "cut_flow": rep.summary(),
        }
    res["load_average_end"] = os.getloadavg()[0]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events-per-run", type=int, default=50_000, help="entries per simulated file (default: 50000)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes, the best is kept (default: 3)")
    ap.add_argument("--quick", action="store_true", help="small models (as in the tests) instead of default sizes")
    ap.add_argument("--out", default="/tmp/autopid-bench-predict", help="work directory (default: %(default)s)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args()
    res = measure(a.out, events_per_run=a.events_per_run, threads=a.threads, repeat=a.repeat, quick=a.quick)
    print(f"\npredict from a ROOT file, {res['cpus']} CPUs, ORT threads {a.threads or 'default'}, "
          f"load average {res['load_average']:.1f} -> {res['load_average_end']:.1f}\n")
    print(f"{'model':<6}{'entries':>9}{'kept':>8}{'entries/s':>12}{'no selection':>14}  signal share (hidden truth)")
    for family in SETUPS:
        r = res[family]
        share = r["signal_share_hidden_truth"]
        print(f"{family:<6}{r['entries']:>9}{r['kept']:>8}{r['entries_per_s']:>12,.0f}"
              f"{r['entries_per_s_no_selection']:>14,.0f}  {share['all']:.3f} -> {share['kept']:.3f}")
    for family in SETUPS:
        print(f"\n{family}: {res[family]['file']}\n{res[family]['cut_flow']}")
    if a.json:
        Path(a.json).write_text(json.dumps({k: v for k, v in res.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
