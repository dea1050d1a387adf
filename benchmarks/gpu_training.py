"""GPU training throughput of FSE and MDA at large batches, and what limits it.

For each model, precision (float32, bfloat16 autocast) and batch size, autopid's own
training loop (``core.train_epoch`` over the dataset held on the GPU, as ``fit`` runs it
with ``device=cuda``) is timed over the steady epochs (the first is left out: CUDA start,
kernel selection). Beside it, to show what limits the loop:

- ``step only``: the same loop on one batch gathered beforehand and fed again and again
  (the model's forward, backward and optimiser step: the ceiling without gathering);
- ``gather only``: the loader alone, batches made on the GPU and nothing done with them.

``ms/step`` against the batch size tells a launch-bound step (flat) from a bandwidth- or
compute-bound one (proportional). A last row per model runs the whole ``fit()`` (with
validation each epoch) and reads its reported events/s. MDA trains with adaptation
(MC and Data rows, lambda 0.05), as the shipped ``mda.yaml``; FSE without.

Needs a CUDA GPU; ``--prepare`` only simulates and preprocesses the data (on any machine).

    python benchmarks/gpu_training.py [--data DIR] [--batch-sizes 4096 8192 16384] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autopid.data import PreprocessedDataset
from autopid.train import core
from autopid.train.config import TrainConfig

SPECIES = {"fse": "proton", "mda": "phosphorus"}
# the shipped search spaces' base models
PARAMS: dict[str, dict[str, Any]] = {
    "fse": {"pooling": "channel", "value_input": "per_feature", "norm_first": True, "num_heads": 4, "dropout": 0.0},
    "mda": {},
}
LAMBDA = {"fse": 0.0, "mda": 0.05}


def prepare(out: Path, family: str) -> PreprocessedDataset:
    """The simulated period of ``family`` preprocessed under ``out`` (made once)."""
    from autopid.preprocess import preprocess
    from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, simulate_period
    from autopid.testing import dataset_for

    exp, sim, name, runs = ((ALICE, AliceSimConfig(), "alice", 2) if family == "fse"
                            else (AMS, AmsSimConfig(), "ams", 4))
    if not (out / name / "P26a" / "period.json").exists():
        simulate_period(exp, sim, out / name, "P26a", runs=runs, events_per_run=100_000, seed=3)
    return PreprocessedDataset(preprocess(dataset_for(name, out / name), cache_root=out / "cache").path)


def cached(out: Path, family: str) -> PreprocessedDataset:
    """The preprocessed cache made by ``--prepare`` (no simulation or ROOT reading here)."""
    name = "alice" if family == "fse" else "ams"
    found = sorted((out / "cache" / "preprocess").glob(f"{name}-*"))
    if not found:
        return prepare(out, family)
    return PreprocessedDataset(found[-1])


def config(family: str, batch_size: int, epochs: int, amp: bool) -> TrainConfig:
    return TrainConfig.model_validate({
        "dataset": "unused", "species": SPECIES[family],
        "model": {"family": family, "params": PARAMS[family]},
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "lambda_max": LAMBDA[family],
                     "signal_fraction": None, "max_eval_rows": 20_000,
                     "early_stopping_patience": None, "mixed_precision": amp}})


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def loop(ds: PreprocessedDataset, family: str, dataset: Any, batch_size: int, amp: bool, epochs: int,
         dev: torch.device) -> dict[str, float]:
    """Events/s of ``core.train_epoch`` (steady epochs), of the step alone and of the gather alone."""
    torch.manual_seed(0)
    model = core.build_model(family, ds, PARAMS[family], domain_head=LAMBDA[family] > 0).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=dev.type == "cuda")  # as fit()
    steps = core.batches_per_epoch(len(dataset), batch_size)
    kw = dict(epochs=epochs, steps_per_epoch=steps, lambda_max=LAMBDA[family], device=dev, mixed_precision=amp)
    rates = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for epoch in range(epochs):
        loader = core.make_loader(family, dataset, batch_size, shuffle=True, seed=epoch)
        sync()
        t0 = time.perf_counter()
        stats = core.train_epoch(model, family, loader, opt, epoch=epoch, **kw)
        sync()
        rates.append(stats["events"] / (time.perf_counter() - t0))
    steady = float(np.median(rates[1:])) if len(rates) > 1 else rates[0]
    batch = next(iter(core.make_loader(family, dataset, batch_size, shuffle=True, seed=99)))
    n_rep = max(steps * 2, 10)
    core.train_epoch(model, family, [batch] * 3, opt, epoch=0, **kw)  # warm
    sync()
    t0 = time.perf_counter()
    stats = core.train_epoch(model, family, [batch] * n_rep, opt, epoch=0, **kw)
    sync()
    step_rate = stats["events"] / (time.perf_counter() - t0)
    sync()
    t0 = time.perf_counter()
    n = 0
    for b in core.make_loader(family, dataset, batch_size, shuffle=True, seed=7):
        n += int(core._get(b, "y").shape[0])
    sync()
    gather_rate = n / (time.perf_counter() - t0)
    return {"events_per_s": steady, "step_only_events_per_s": step_rate, "gather_only_events_per_s": gather_rate,
            "ms_per_step": 1e3 * batch_size / steady, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan"),
            "rows": float(len(dataset)), "loss": stats["loss"]}


def profile(ds: PreprocessedDataset, family: str, dataset: Any, batch_size: int, amp: bool, dev: torch.device
            ) -> dict[str, Any]:
    """One epoch under the torch profiler: wall time, the time the GPU spent in kernels
    (busy fraction: low means the host cannot launch work fast enough) and the top ops."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = core.build_model(family, ds, PARAMS[family], domain_head=LAMBDA[family] > 0).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=dev.type == "cuda")  # as fit()
    steps = core.batches_per_epoch(len(dataset), batch_size)
    kw = dict(epochs=2, steps_per_epoch=steps, lambda_max=LAMBDA[family], device=dev, mixed_precision=amp)
    core.train_epoch(model, family, core.make_loader(family, dataset, batch_size, True, 0), opt, epoch=0, **kw)
    sync()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        core.train_epoch(model, family, core.make_loader(family, dataset, batch_size, True, 1), opt, epoch=1, **kw)
        sync()
        wall = time.perf_counter() - t0
    from torch.autograd import DeviceType

    kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]

    def dev_time(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))

    busy = sum(dev_time(e) for e in kernels) / 1e6
    top = sorted(kernels, key=dev_time, reverse=True)[:8]
    return {"wall_s": wall, "gpu_busy_s": busy, "steps": steps, "kernel_launches": sum(e.count for e in kernels),
            "top": [(e.key, dev_time(e) / 1e3, e.count) for e in top]}


def whole_fit(ds: PreprocessedDataset, family: str, batch_size: int, amp: bool, dev: torch.device) -> dict[str, float]:
    from autopid.train.fit import fit

    t0 = time.perf_counter()
    _, state = fit(config(family, batch_size, 3, amp), ds, device=dev)
    wall = time.perf_counter() - t0
    steady = state.history[1:] or state.history
    eps = sum(h["events"] for h in steady) / sum(h["train_seconds"] for h in steady)
    return {"events_per_s": eps, "wall_s": wall, "val_auc": state.history[-1]["val_auc"]}


@contextlib.contextmanager
def _attention(backend: str) -> Iterator[None]:
    """FSE's attention kernels: autopid's choice, or torch's default / efficient / cuDNN /
    math scaled-dot-product attention instead (to show why autopid chooses what it does)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from autopid.models import fse

    if backend == "autopid":
        yield
        return
    which = {"math": [SDPBackend.MATH], "efficient": [SDPBackend.EFFICIENT_ATTENTION],
             "cudnn": [SDPBackend.CUDNN_ATTENTION], "default": None}[backend]
    own = fse._attention_kernels
    fse._attention_kernels = (lambda x: contextlib.nullcontext()) if which is None else (lambda x: sdpa_kernel(which))
    try:
        yield
    finally:
        fse._attention_kernels = own


def measure(out: Path, *, families: tuple[str, ...] = ("fse", "mda"), batch_sizes: tuple[int, ...] = (16384,),
            epochs: int = 4, attention: tuple[str, ...] = ("autopid",), whole: bool = True,
            device: str = "cuda") -> dict[str, Any]:
    """The table's rows (printed as they come) and, per model, the best events/s of the
    training loop: ``{"gpu", "torch", "rows", "best": {family: events/s}}``."""
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "none (dry run)"
    print(f"GPU: {gpu}, torch {torch.__version__}")
    print(f"{'model':<6}{'precision':<16}{'batch':>7}{'events/s':>12}{'step only':>12}{'gather only':>13}"
          f"{'ms/step':>9}{'peak GiB':>9}{'rows':>9}", flush=True)
    rows: list[dict[str, Any]] = []
    for family in families:
        ds = cached(out, family)
        cfg = config(family, batch_sizes[0], epochs, False)
        frames = core.load_frames(ds, cfg.species, cfg.training, with_data=LAMBDA[family] > 0)
        calibration = core.charge_calibration(ds) if family == "mda" else None
        dataset = core.make_dataset(family, frames.train, ds, calibration=calibration).to(dev)
        for amp, bs, backend in [(amp, bs, b) for amp in (False, True) for bs in batch_sizes
                                 for b in (attention if family == "fse" else ("autopid",))]:
            label = ("bf16" if amp else "float32") + ("" if backend == "autopid" else f"/{backend}")
            try:
                with _attention(backend):
                    r = loop(ds, family, dataset, bs, amp, epochs, dev)
            except Exception as exc:  # report and go on: one failure must not lose the table
                print(f"{family:<6}{label:<16}{bs:>7}  failed: {exc!r}", flush=True)
                continue
            rows.append({"model": family, "precision": "bf16" if amp else "float32", "batch_size": bs,
                         "attention": backend, **r})
            print(f"{family:<6}{label:<16}{bs:>7}{r['events_per_s']:>12,.0f}"
                  f"{r['step_only_events_per_s']:>12,.0f}{r['gather_only_events_per_s']:>13,.0f}"
                  f"{r['ms_per_step']:>9.2f}{r['peak_gib']:>9.2f}{r['rows']:>9,.0f}", flush=True)
        best = max((r for r in rows if r["model"] == family and r.get("attention") == "autopid"),
                   key=lambda r: r["events_per_s"], default=None)
        if best is None or not whole:
            continue
        amp = best["precision"] == "bf16"
        if dev.type == "cuda":
            p = profile(ds, family, dataset, best["batch_size"], amp, dev)
            rows.append({"model": family, "precision": best["precision"], "batch_size": best["batch_size"],
                         "profile": p})
            print(f"  profile of one epoch at batch {best['batch_size']} ({best['precision']}): {p['steps']} steps, "
                  f"{p['wall_s'] * 1e3:.1f} ms wall, GPU busy {p['gpu_busy_s'] * 1e3:.1f} ms "
                  f"({100 * p['gpu_busy_s'] / p['wall_s']:.0f} %), {p['kernel_launches'] / p['steps']:.0f} kernels "
                  "per step; top kernels (ms, calls):")
            for key, ms, count in p["top"]:
                print(f"    {ms:9.2f} {count:6d}  {key[:90]}")
        f = whole_fit(ds, family, best["batch_size"], amp, dev)
        rows.append({"model": family, "precision": best["precision"], "batch_size": best["batch_size"],
                     "fit": True, **f})
        print(f"{family:<6}{best['precision']:<16}{best['batch_size']:>7}{f['events_per_s']:>12,.0f}"
              f"  (whole fit(), 3 epochs with validation: {f['wall_s']:.1f} s wall, val AUC {f['val_auc']:.4f})",
              flush=True)
    best_of = {fam: max((r["events_per_s"] for r in rows if r["model"] == fam and r.get("attention") == "autopid"),
                        default=None) for fam in families}
    return {"gpu": gpu, "torch": torch.__version__, "rows": rows, "best": best_of}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/autopid-bench-gpu", help="where the simulated data and cache live")
    ap.add_argument("--prepare", action="store_true", help="only simulate and preprocess the data")
    ap.add_argument("--families", nargs="+", default=["fse", "mda"], choices=["fse", "mda"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[4096, 8192, 16384])
    ap.add_argument("--epochs", type=int, default=4, help="epochs per measurement (the first is left out)")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--attention", nargs="+", default=["autopid"],
                    choices=["autopid", "default", "math", "efficient", "cudnn"],
                    help="FSE attention kernels to compare: autopid's choice, or torch's (sdpa_kernel)")
    ap.add_argument("--no-fit", action="store_true", help="leave out the whole-fit() and profile rows")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script on a machine without a GPU")
    a = ap.parse_args()
    out = Path(a.data)
    if a.prepare:
        for family in a.families:
            print(family, prepare(out, family).path)
        return
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU training (use --prepare to make the data)")
    res = measure(out, families=tuple(a.families), batch_sizes=tuple(a.batch_sizes), epochs=a.epochs,
                  attention=tuple(a.attention), whole=not a.no_fit, device=a.device)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
