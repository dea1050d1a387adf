"""``autopid predict``: score tracks with the published model that serves a run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="score a ROOT file with the model that serves a run",
                       description="Resolve the published model for --species and --run (or take --model), score "
                       "every entry of the input tree with ONNX Runtime in batches, and write the score and the "
                       "boolean selection (score >= the model's threshold) to Parquet.")
    p.add_argument("--species", default=None, help="species of the model (with --run)")
    p.add_argument("--run", type=int, default=None, help="run number the model must cover")
    p.add_argument("--experiment", default=None, help="experiment, when the species is published for several")
    p.add_argument("--model", default=None, metavar="ID", help="use this version (EXPERIMENT/SPECIES/vNNNN) instead")
    p.add_argument("--input", required=True, help="ROOT file (or .parquet of raw columns)")
    p.add_argument("--tree", default=None, help="tree name (default: the one the model was trained on)")
    p.add_argument("--out", required=True, help="output .parquet (or .csv)")
    p.add_argument("--registry", default=None, metavar="DIR",
                   help="registry root (default: $AUTOPID_REGISTRY, else ./registry)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's choice)")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per ONNX Runtime call")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from autopid._logging import get_logger
    from autopid.errors import ConfigError, InputError
    from autopid.publish.predict import Predictor
    from autopid.publish.registry import Registry

    log = get_logger(__name__)
    reg = Registry(args.registry)
    if args.model:
        version = reg.get(args.model)
    else:
        if args.species is None or args.run is None:
            raise ConfigError("give --species and --run (or --model ID)")
        version = reg.resolve(args.species, args.run, args.experiment)
    src = Path(args.input)
    if not src.is_file():
        raise InputError(f"{src}: file not found")
    predictor = Predictor(version.path, threads=args.threads, name=str(version.id))
    data: Any = pd.read_parquet(src) if src.suffix == ".parquet" else src
    t0 = time.perf_counter()
    result = predictor.predict(data, tree=args.tree, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    run_col = predictor.spec.get("run_branch")
    if run_col in result.extra and len(result.extra[run_col]):
        runs = np.unique(result.extra[run_col])
        outside = [int(r) for r in runs if not version.covers(int(r))]
        if outside:
            log.warning("%s: runs %s are outside the validity %d-%d of %s", src, outside[:5], *version.runs, version.id)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame = result.to_frame()
    if out.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    n = len(result.score)
    print(f"scored {n} entries with {version.id} in {seconds:.2f} s ({n / max(seconds, 1e-9):,.0f} /s); "
          f"selected {int(result.selected.sum())} at threshold {result.threshold:.4f}")
    print(f"wrote {out}")
    return 0
