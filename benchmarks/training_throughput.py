"""Training events per CPU-second through autopid (``autopid.train.fit.fit``, in process,
1 thread) next to a bare PyTorch loop of the same model, batches and optimiser, for FSE
and for MDA. The bare loop iterates over a list of batches built once before timing (for
MDA: PyG batches collated from per-event ``Data`` objects), so the ratio shows what
autopid's loaders and loop cost on top of the model itself.

    python benchmarks/training_throughput.py [--family fse|mda|both] [--rows 4000] [--epochs 2]

Bare epochs run interleaved with fit's epochs, so a changing load on the machine hits
both alike. Only training passes are timed (``core.train_epoch`` for autopid, the loop
for the bare run); validation and dataset building are not. CPU time is
``time.process_time()``, wall time ``time.perf_counter()``. Other scripts can import
:func:`measure`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autopid.data.dataset import PreprocessedDataset
from autopid.train import core
from autopid.train.config import TrainConfig

DEFAULT_OUT = "/tmp/autopid-bench-train"
BATCH_SIZE = 128
_DATASETS: dict[tuple[str, str], PreprocessedDataset] = {}


def _dataset(family: str, rows: int, out: Path) -> tuple[PreprocessedDataset, str]:
    """The simulated dataset of a family (simulated and preprocessed once under ``out``)."""
    from autopid.preprocess import preprocess
    from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, simulate_period
    from autopid.testing import dataset_for

    exp, sim, name, species = ((ALICE, AliceSimConfig(), "alice", "pion") if family == "fse"
                               else (AMS, AmsSimConfig(), "ams", "phosphorus"))
    key = (name, str(out))
    if key not in _DATASETS:
        if not (out / name / "P26a" / "period.json").exists():
            # the AMS selection keeps a fraction of the events: simulate a margin
            simulate_period(exp, sim, out / name, "P26a", runs=2, events_per_run=max(20_000, 4 * rows), seed=2)
        prep = preprocess(dataset_for(name, out / name), cache_root=out / "cache")
        _DATASETS[key] = PreprocessedDataset(prep.path)
    return _DATASETS[key], species


def _config(family: str, species: str, rows: int, epochs: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "dataset": "unused", "species": species, "model": {"family": family},
        "training": {"epochs": epochs, "batch_size": BATCH_SIZE, "max_train_rows": rows, "max_eval_rows": 500,
                     "lambda_max": 0.0, "early_stopping_patience": None, "seed": 0}})


class _Clock:
    """CPU and wall seconds and events, summed over timed sections."""

    def __init__(self) -> None:
        self.cpu = self.wall = self.events = 0.0

    def timed(self, fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        @wraps(fn)
        def run(*args: Any, **kwargs: Any) -> dict[str, float]:
            c0, w0 = time.process_time(), time.perf_counter()
            stats = fn(*args, **kwargs)
            self.cpu += time.process_time() - c0
            self.wall += time.perf_counter() - w0
            self.events += stats["events"]
            return stats
        return run


def _bare_epochs(cfg: TrainConfig, ds: PreprocessedDataset) -> Callable[[], Callable[[], dict[str, float]]]:
    """A factory of bare loops (same rows, model, optimiser and batch size; batches
    pre-built here, once, before any timing): each call gives a fresh model and
    optimiser, and a function that runs one pass over the batches."""
    t = cfg.training
    family = cfg.model.family
    frames = core.load_frames(ds, cfg.species, t, with_data=False)
    dataset = core.make_dataset(family, frames.train, ds)
    batches = _prebuilt_batches(family, dataset, t.batch_size, t.seed)
    bce = nn.functional.binary_cross_entropy_with_logits

    def new_loop() -> Callable[[], dict[str, float]]:
        torch.manual_seed(t.seed)
        model = core.build_model(family, ds, cfg.model.params, domain_head=False)
        opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)

        def epoch() -> dict[str, float]:
            model.train()
            seen = 0
            for batch in batches:
                out = core.forward(model, family, batch)
                y = core._get(batch, "y")
                loss = bce(out.logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += int(y.shape[0])
            return {"events": float(seen)}

        return epoch

    return new_loop


def _prebuilt_batches(family: str, dataset: Any, batch_size: int, seed: int) -> list[Any]:
    """The training batches, built once: FSE dicts from the dataset, MDA PyG batches
    collated from per-event ``Data`` objects."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if family == "fse":
        return [dataset[c] for c in chunks]
    from torch_geometric.data import Batch

    return [Batch.from_data_list([dataset[i] for i in c]) for c in chunks]


def _run(cfg: TrainConfig, ds: PreprocessedDataset) -> tuple[_Clock, _Clock]:
    """``fit`` in this process, with a bare epoch next to each of its training passes
    (before it on even epochs, after it on odd ones), so that both see the same load.
    Only the passes are timed: ``core.train_epoch`` for autopid, the loop for the bare run."""
    from autopid.train.fit import fit

    new_loop = _bare_epochs(cfg, ds)
    new_loop()()  # warm-up on a throw-away model: process-wide first-call costs land on neither
    auto, bare = _Clock(), _Clock()
    timed_bare = bare.timed(new_loop())  # a fresh model and optimiser, as fit's
    original = core.train_epoch
    timed_auto = auto.timed(original)

    def side_by_side(*args: Any, **kwargs: Any) -> dict[str, float]:
        first = kwargs["epoch"] % 2 == 0
        if first:
            timed_bare()
        stats = timed_auto(*args, **kwargs)
        if not first:
            timed_bare()
        return stats

    core.train_epoch = side_by_side  # fit calls it through the module
    try:
        fit(cfg, ds)
    finally:
        core.train_epoch = original
    return auto, bare


def measure(family: str, rows: int = 4000, epochs: int = 2, *, out: str | Path = DEFAULT_OUT) -> dict[str, float]:
    """Training throughput of autopid's ``fit`` and of a bare loop, one thread each.

    Returns ``autopid_eps`` and ``bare_eps`` (events per CPU-second), ``ratio``
    (autopid/bare), the same per wall-second (``*_wall_eps``, ``wall_ratio``) and the
    events each timed.
    """
    if family not in ("fse", "mda"):
        raise ValueError(f"family must be 'fse' or 'mda', got {family!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one Ray Train worker with one CPU
    try:
        ds, species = _dataset(family, rows, Path(out))
        auto, bare = _run(_config(family, species, rows, epochs), ds)
    finally:
        torch.set_num_threads(threads)
    res = {
        "autopid_eps": auto.events / max(auto.cpu, 1e-9),
        "bare_eps": bare.events / max(bare.cpu, 1e-9),
        "autopid_wall_eps": auto.events / max(auto.wall, 1e-9),
        "bare_wall_eps": bare.events / max(bare.wall, 1e-9),
        "autopid_events": auto.events,
        "bare_events": bare.events,
    }
    res["ratio"] = res["autopid_eps"] / res["bare_eps"]
    res["wall_ratio"] = res["autopid_wall_eps"] / res["bare_wall_eps"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=["fse", "mda", "both"], default="both")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args()
    families = ["fse", "mda"] if a.family == "both" else [a.family]
    results = {f: measure(f, a.rows, a.epochs, out=a.out) for f in families}
    print(f"training throughput, 1 thread, batch {BATCH_SIZE}, up to {a.rows} rows x {a.epochs} epochs")
    print(f"{'model':<6}{'autopid ev/CPU-s':>18}{'bare ev/CPU-s':>16}{'ratio':>8}"
          f"{'autopid ev/s':>15}{'bare ev/s':>12}{'wall ratio':>12}")
    for f, r in results.items():
        print(f"{f:<6}{r['autopid_eps']:>18,.0f}{r['bare_eps']:>16,.0f}{r['ratio']:>8.2f}"
              f"{r['autopid_wall_eps']:>15,.0f}{r['bare_wall_eps']:>12,.0f}{r['wall_ratio']:>12.2f}")
    if any(np.isfinite(r["ratio"]) and r["ratio"] < 0.9 for r in results.values()):
        print("note: a ratio below 0.90 means autopid's loop costs over 10% more than the bare loop")


if __name__ == "__main__":
    main()
