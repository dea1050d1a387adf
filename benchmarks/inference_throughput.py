"""Inference tracks/s of a published FSE model: ONNX Runtime in batches, PyTorch eager in
batches, and one track per call (ALICE's current interface), measured in the same run
with the same number of threads.

    python benchmarks/inference_throughput.py [--tracks 100000] [--threads 2] [--batch 4096]

Every row starts from the raw feature matrix (missing = NaN): the ONNX graph and the
PyTorch wrapper both apply the missing rules, transforms and normalisation themselves.
"PyTorch, autopid loader" is the training-side path (NumPy normalisation, compacted
pairs, model), for reference. The model is the paper's default FSE+attention size,
trained for one short epoch (throughput does not depend on the weights).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autopid.data import PreprocessedDataset
from autopid.preprocess import preprocess
from autopid.publish.onnx_export import export_model, fse_module
from autopid.publish.predict import Predictor
from autopid.simulate import ALICE, AliceSimConfig, simulate_period
from autopid.testing import dataset_for
from autopid.train import artifacts, core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def _rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-12)


def _timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000, help="tracks scored by the batch measurements")
    ap.add_argument("--single", type=int, default=3_000, help="tracks scored one per call")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads and torch threads")
    ap.add_argument("--out", default="/tmp/autopid-bench-inference")
    a = ap.parse_args()
    out = Path(a.out)
    torch.set_num_threads(a.threads)

    if not (out / "alice" / "LHC26a" / "period.json").exists():
        simulate_period(ALICE, AliceSimConfig(), out / "alice", "LHC26a", runs=2, events_per_run=20_000, seed=5)
    ds = PreprocessedDataset(preprocess(dataset_for("alice", out / "alice"), cache_root=out / "cache").path)
    model_pt = out / "model.pt"
    cfg = TrainConfig(dataset="alice", species="proton", model={"family": "fse"},
                      training={"epochs": 1, "max_train_rows": 4000, "max_eval_rows": 2000, "batch_size": 256})
    if not model_pt.exists():
        model, _ = fit(cfg, ds)
        artifacts.save_atomic(artifacts.model_payload(model, cfg, ds), model_pt)
    export_dir = out / f"export-{int(time.time())}"
    result = export_model(model_pt, ds, export_dir, threads=a.threads)
    model, payload = artifacts.load_model(model_pt, ds)

    frame = pd.concat([ds.frame(s, d) for s in ("train", "validation", "test") for d in ("mc", "data")],
                      ignore_index=True)
    reps = -(-a.tracks // len(frame))
    frame = pd.concat([frame] * reps, ignore_index=True).iloc[: a.tracks].reset_index(drop=True)
    x = frame[ds.columns].to_numpy(np.float32)
    n = len(x)

    predictor = Predictor(export_dir, threads=a.threads)
    wrapper = fse_module(model, payload, ds, predictor.spec)
    xt = torch.from_numpy(x.copy())

    def ort_batch() -> np.ndarray:
        return predictor.score_matrix(x, batch_size=a.batch)

    @torch.no_grad()
    def torch_batch() -> np.ndarray:
        return torch.cat([wrapper(xt[i:i + a.batch]) for i in range(0, n, a.batch)]).numpy()

    def torch_loader() -> np.ndarray:
        return core.predict_frame(model, "fse", frame, ds, batch_size=a.batch)["score"]

    m = min(a.single, n)
    sess = predictor.session
    rows = [x[i:i + 1] for i in range(m)]

    def ort_single() -> None:
        for r in rows:
            sess.run(None, {"features": r})

    @torch.no_grad()
    def torch_single() -> None:
        for i in range(m):
            wrapper(xt[i:i + 1])

    s_ort = ort_batch()
    s_torch = torch_batch()
    s_loader = torch_loader()
    agree = max(float(np.abs(s_ort - s_torch).max()), float(np.abs(s_ort - s_loader).max()))

    rows_out = [
        ("ONNX Runtime, batches", a.batch, n, _timed(ort_batch)),
        ("PyTorch eager, batches (same raw-input module)", a.batch, n, _timed(torch_batch)),
        ("PyTorch, autopid loader (NumPy norm + pairs)", a.batch, n, _timed(torch_loader, repeat=2)),
        ("ONNX Runtime, one track per call", 1, m, _timed(ort_single, repeat=1)),
        ("PyTorch eager, one track per call", 1, m, _timed(torch_single, repeat=1)),
    ]
    print(f"\nFSE+attention (default size), {ds.manifest['experiment']} {cfg.species}; "
          f"{a.threads} threads (torch and ORT intra-op); torch {torch.__version__}")
    print(f"export parity max |diff| {result.parity.max_abs_diff:.1e}; batch paths agree within {agree:.1e}\n")
    print(f"{'path':<48}{'batch':>7}{'tracks':>9}{'seconds':>10}{'tracks/s':>13}{'us/track':>10}")
    base = _rate(rows_out[0][2], rows_out[0][3])
    for name, bs, count, sec in rows_out:
        r = _rate(count, sec)
        print(f"{name:<48}{bs:>7}{count:>9}{sec:>10.3f}{r:>13,.0f}{1e6 / r:>10.1f}")
    single = _rate(rows_out[3][2], rows_out[3][3])
    print(f"\nONNX Runtime batches vs one track per call: x{base / single:.1f}; "
          f"vs PyTorch eager batches: x{base / _rate(rows_out[1][2], rows_out[1][3]):.2f}")


if __name__ == "__main__":
    main()
