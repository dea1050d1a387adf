"""``autopid predict``: score tracks with the published model that serves a run."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="score a ROOT file with the model that serves a run",
                       description="Resolve the published model for --species and --run (or take --model), apply "
                       "the selection the model was trained under (the dataset's preselection cuts and required "
                       "features, recorded with the model), score the kept entries with ONNX Runtime in batches, "
                       "and write their entry number, run, event, score and boolean selection (score >= the "
                       "model's threshold) to Parquet. The cut flow (entries kept, dropped per cut and why) is "
                       "printed. TTree and RNTuple inputs alike.")
    p.add_argument("--species", default=None, help="species of the model (with --run; default: none)")
    p.add_argument("--run", type=int, default=None, help="run number the model must cover (default: none)")
    p.add_argument("--experiment", default=None,
                   help="experiment, when the species is published for several (default: any)")
    p.add_argument("--model", default=None, metavar="ID",
                   help="use this version (EXPERIMENT/SPECIES/vNNNN) instead of resolving one (default: none)")
    p.add_argument("--input", required=True, help="ROOT file (TTree or RNTuple), or .parquet of raw columns")
    p.add_argument("--tree", default=None, help="tree name (default: the one the model was trained on)")
    p.add_argument("--out", required=True, help="output .parquet (or .csv)")
    p.add_argument("--no-selection", action="store_true", default=False,
                   help="score every entry: skip the model's selection (default: apply it)")
    p.add_argument("--registry", default=None, metavar="DIR",
                   help="registry root (default: $AUTOPID_REGISTRY, else ./registry)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice, the physical cores)")
    p.add_argument("--batch-size", type=int, default=65_536,
                   help="entries read, selected and normalised at a time; ONNX Runtime runs on slices of at "
                   "most 512 tracks (FSE) or 512 events (MDA) of them (default: 65536)")
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
    out = Path(args.out)
    # checked before scoring: a wrong --out found afterwards wastes the whole pass
    if out.is_dir() or args.out.endswith(("/", os.sep)):
        raise ConfigError(f"--out {args.out}: a directory; give a file name ending in .parquet or .csv")
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"--out {args.out}: give a file name ending in .parquet or .csv")
    if version.revoked is not None:
        log.warning("%s is revoked (%s): resolve would no longer return it", version.id,
                    version.revoked.get("reason") or version.revoked.get("revoked"))
    predictor = Predictor(version.path, threads=args.threads, name=str(version.id))
    data: Any = src
    if src.suffix == ".parquet":
        try:
            data = pd.read_parquet(src)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"{src}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    t0 = time.perf_counter()
    result = predictor.predict(data, tree=args.tree, batch_size=args.batch_size,
                               apply_selection=not args.no_selection)
    seconds = time.perf_counter() - t0
    run_col = predictor.spec.get("run_branch")
    if run_col in result.extra and len(result.extra[run_col]):
        runs = np.unique(result.extra[run_col])
        outside = [int(r) for r in runs if not version.covers(int(r))]
        if outside:
            log.warning("%s: runs %s are outside the validity %d-%d of %s", src, outside[:5], *version.runs, version.id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame = result.to_frame()
    try:
        if out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    rep = result.selection
    entries = rep.entries if rep is not None else len(result.score)
    n = len(result.score)
    thr = f"{result.threshold:.4f}" if result.threshold is not None else "none"
    if rep is not None:
        print(rep.summary())
    print(f"scored {n} of {entries} entries with {version.id} in {seconds:.2f} s ({entries / max(seconds, 1e-9):,.0f} "
          f"entries/s); selected {int(result.selected.sum())} at threshold {thr}")
    print(f"wrote {out}")
    return 0
