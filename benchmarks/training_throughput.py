"""Training events/s in autopid (Ray Train, 1 worker) next to a plain PyTorch loop of the
same model, data and batch size, measured in the same run.

    python benchmarks/training_throughput.py [--family fse|mda] [--rows 20000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from autopid.data import PreprocessedDataset
from autopid.preprocess import preprocess
from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, simulate_period
from autopid.testing import dataset_for, write_dataset_yaml
from autopid.train import core
from autopid.train.config import TrainConfig
from autopid.train.run import train


def plain_loop(cfg: TrainConfig, ds: PreprocessedDataset) -> float:
    """events/s of a bare loop: same model, batches and optimiser; no Ray, no evaluation."""
    torch.set_num_threads(1)  # as one Ray Train worker with one CPU
    frames = core.load_frames(ds, cfg.species, cfg.training, with_data=False)
    family = cfg.model.family
    dataset = core.make_dataset(family, frames.train, ds)
    model = core.build_model(family, ds, {}, domain_head=False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.training.lr)
    seen, t0 = 0, time.perf_counter()
    for epoch in range(cfg.training.epochs):
        model.train()
        for batch in core.make_loader(family, dataset, cfg.training.batch_size, shuffle=True, seed=epoch):
            out = core.forward(model, family, batch)
            loss = nn.functional.binary_cross_entropy_with_logits(out.logits, core._get(batch, "y"))
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += int(core._get(batch, "y").shape[0])
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=["fse", "mda"], default="fse")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="/tmp/autopid-bench-train")
    a = ap.parse_args()
    out = Path(a.out)
    exp, sim, name, species = ((ALICE, AliceSimConfig(), "alice", "pion") if a.family == "fse"
                               else (AMS, AmsSimConfig(), "ams", "phosphorus"))
    if not (out / name / "P26a" / "period.json").exists():
        simulate_period(exp, sim, out / name, "P26a", runs=2, events_per_run=50_000, seed=2)
    ds_yaml = write_dataset_yaml(dataset_for(name, out / name), out / f"{name}.yaml")
    cfg = TrainConfig.model_validate({
        "dataset": str(ds_yaml), "species": species, "model": {"family": a.family},
        "training": {"epochs": a.epochs, "batch_size": 128, "max_train_rows": a.rows, "max_eval_rows": 2000,
                     "early_stopping_patience": None}, "cache_dir": str(out / "cache")})
    ds = PreprocessedDataset(preprocess(dataset_for(name, out / name), cache_root=out / "cache").path)
    plain = plain_loop(cfg, ds)
    summary = train(cfg, run_dir=out / "run")
    import pandas as pd

    hist = pd.read_csv(out / "run" / "metrics.csv")
    auto = float(hist["events"].sum() / hist["train_seconds"].sum())
    print(f"{'loop':<34}{'events/s':>12}")
    print(f"{'plain PyTorch (1 thread)':<34}{plain:>12,.0f}")
    print(f"{'autopid on Ray Train (1 worker)':<34}{auto:>12,.0f}")
    print(f"ratio autopid/plain: {auto / plain:.2f}; whole run incl. Ray start and evaluation: "
          f"{summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
