"""Training on CPU vs CUDA (float32 and bfloat16 autocast) for FSE and MDA, same data,
same model, measured in one run. Needs a CUDA GPU; prints a table.

    python benchmarks/gpu_training.py [--rows 40000] [--epochs 2] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from autopid.data import PreprocessedDataset
from autopid.preprocess import preprocess
from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, simulate_period
from autopid.testing import dataset_for
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def dataset(out: Path, family: str) -> tuple[PreprocessedDataset, str]:
    exp, sim, name, species = ((ALICE, AliceSimConfig(), "alice", "proton") if family == "fse"
                               else (AMS, AmsSimConfig(), "ams", "phosphorus"))
    if not (out / name / "P26a" / "period.json").exists():
        simulate_period(exp, sim, out / name, "P26a", runs=2, events_per_run=100_000, seed=3)
    prep = preprocess(dataset_for(name, out / name), cache_root=out / "cache")
    return PreprocessedDataset(prep.path), species


def run(ds: PreprocessedDataset, family: str, species: str, device: str, amp: bool, a: argparse.Namespace
        ) -> dict[str, float]:
    cfg = TrainConfig.model_validate({
        "dataset": "unused", "species": species, "model": {"family": family},
        "training": {"epochs": a.epochs, "batch_size": a.batch_size, "lr": 1e-3, "lambda_max": 0.5,
                     "signal_fraction": 0.5, "max_train_rows": a.rows, "max_eval_rows": 5000,
                     "early_stopping_patience": None, "mixed_precision": amp}})
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, state = fit(cfg, ds, device=torch.device(device))
    wall = time.perf_counter() - t0
    last = state.history[-1]
    eps = sum(h["events"] for h in state.history) / sum(h["train_seconds"] for h in state.history)
    return {"events_per_s": eps, "wall_s": wall, "val_auc": last["val_auc"],
            "domain_acc": last.get("domain_accuracy", float("nan"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=4, help="torch CPU threads for the CPU rows")
    ap.add_argument("--out", default="/tmp/autopid-bench-gpu")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark compares CPU with GPU training")
    torch.set_num_threads(a.threads)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CPU threads {a.threads}, "
          f"{a.rows} training rows x {a.epochs} epochs, batch {a.batch_size}, lambda_max 0.5")
    print(f"{'model':<6}{'device':<8}{'precision':<11}{'events/s':>11}{'x CPU':>8}{'wall s':>9}"
          f"{'val AUC':>9}{'dom acc':>9}")
    for family in ("fse", "mda"):
        ds, species = dataset(Path(a.out), family)
        base = None
        for device, amp in (("cpu", False), ("cuda", False), ("cuda", True)):
            r = run(ds, family, species, device, amp, a)
            base = base or r["events_per_s"]
            print(f"{family:<6}{device:<8}{'bf16 amp' if amp else 'float32':<11}{r['events_per_s']:>11,.0f}"
                  f"{r['events_per_s'] / base:>8.1f}{r['wall_s']:>9.1f}{r['val_auc']:>9.4f}{r['domain_acc']:>9.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
