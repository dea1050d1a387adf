"""Batch inference with ONNX Runtime on a published model.

``predict(model, data)`` scores a NumPy array (``[rows, F]`` in the order of
``columns_for_training.json``), a pandas DataFrame, a mapping of arrays, an awkward
Array of records, or a ROOT file (path, plus the tree name unless the model records
one), in batches, and returns the probability and the boolean selection at the
threshold from ``thresholds.json``. Raw inputs are read as preprocessing read them:
sentinel values become NaN and the missing-detector rules apply (the FSE graph applies
them itself; MDA inputs get them in Python before the graphs are built). Selection cuts
of the dataset are *not* applied: every row gets a score.

``model`` is a :class:`~autopid.publish.registry.ModelVersion`, a model id such as
``alice/proton/v0001`` (looked up in the registry), or a directory holding
``model.onnx`` and its side files (a registry version directory is checked against the
sha256 sums in its ``metadata.json`` first).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopid.errors import ConfigError, InputError
from autopid.monitoring import metrics
from autopid.publish import inputs
from autopid.publish.files import EXPORT_INFO_FILE, MDA_INPUTS, MODEL_FILE, THRESHOLDS_FILE

DEFAULT_BATCH = 65_536


def make_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session; ``threads`` sets the intra-op threads (default: ORT's)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"{path}: ONNX Runtime cannot load the model ({type(exc).__name__}: {exc})") from exc


@dataclass
class Prediction:
    """Scores (probability of the signal species), the selection and pass-through columns."""

    score: np.ndarray
    selected: np.ndarray
    threshold: float | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        out = pd.DataFrame({k: v for k, v in self.extra.items()})
        out["score"] = self.score
        out["selected"] = self.selected
        return out


def _is_root_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike)) and (str(data).endswith(".root") or Path(data).is_file())


class Predictor:
    """An ONNX Runtime session on one exported model directory, reused across calls."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, name: str | None = None) -> None:
        self.directory = Path(directory)
        self.name = name or str(self.directory)
        if not (self.directory / MODEL_FILE).is_file():
            raise InputError(f"{self.directory}: no {MODEL_FILE} here (not an exported model directory)")
        self.layout = inputs.StoredLayout.from_dir(self.directory)
        self.spec = self.layout.spec
        self.family: str = self.spec["family"]
        self.threshold: float | None = None
        self.thresholds: dict[str, Any] = {}
        tpath = self.directory / THRESHOLDS_FILE
        if tpath.is_file():
            try:
                self.thresholds = json.loads(tpath.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise InputError(f"{tpath}: not valid JSON ({exc})") from exc
            self.threshold = float(self.thresholds[self.thresholds.get("default", "best_f1")])
        self.session = make_session(self.directory / MODEL_FILE, threads)
        self._labels = (str(self.spec.get("experiment") or "other"), _species_of(self.directory), self.family)

    # -- scoring -----------------------------------------------------------------------
    def score_matrix(self, x: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """FSE: probabilities of a raw ``[N, F]`` float32 matrix (missing = NaN)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = [self.session.run(None, {"features": x[i:i + batch_size]})[0]
               for i in range(0, len(x), max(batch_size, 1))]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def score_mda(self, frame: pd.DataFrame, batch_size: int = 1024) -> np.ndarray:
        """MDA: graphs built from a frame of raw columns (rules applied), then ORT per batch."""
        from autopid.data import MDADataset, mda_dataloader

        if len(frame) == 0:
            return np.zeros(0, np.float32)
        dataset = MDADataset(frame, self.layout)  # type: ignore[arg-type]
        out = []
        for b in mda_dataloader(dataset, batch_size=batch_size, shuffle=False):
            feeds = {n: getattr(b, n).numpy() for n in MDA_INPUTS}
            out.append(self.session.run(None, feeds)[0])
        return np.concatenate(out).astype(np.float32)

    def score_columns(self, cols: Mapping[str, np.ndarray], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Probabilities of raw columns (sentinels already NaN)."""
        if self.family == "fse":
            return self.score_matrix(inputs.raw_matrix(cols, self.spec, apply_rules=False), batch_size)
        work = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
        inputs.apply_missing_rules(work, self.spec, self.name)
        frame = pd.DataFrame({c: work[c] for c in self.spec["columns"]})
        return self.score_mda(frame, min(batch_size, 1024))

    def _chunks(self, data: Any, tree: str | None, batch_size: int
                ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        if _is_root_path(data):
            yield from inputs.root_batches(data, tree, self.spec, batch_size)
            return
        cols = inputs.table_columns(data, self.spec)
        n = len(next(iter(cols.values()))) if cols else 0
        extra: dict[str, np.ndarray] = {}
        if isinstance(data, pd.DataFrame):
            extra = {k: data[k].to_numpy() for k in (self.spec.get("run_branch"), self.spec.get("event_branch"))
                     if k and k in data.columns}
        for i in range(0, max(n, 1), batch_size):
            yield {k: v[i:i + batch_size] for k, v in cols.items()}, {k: v[i:i + batch_size] for k, v in extra.items()}

    def predict(self, data: Any, *, tree: str | None = None, batch_size: int = DEFAULT_BATCH,
                threshold: float | None = None) -> Prediction:
        """Score ``data`` in batches; ``selected = score >= threshold`` (the model's by default)."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        scores: list[np.ndarray] = []
        extras: dict[str, list[np.ndarray]] = {}
        latency = metrics.INFERENCE_LATENCY.labels(*self._labels)
        tracks = metrics.INFERENCE_TRACKS.labels(*self._labels)
        for cols, extra in self._chunks(data, tree, batch_size):
            t0 = time.perf_counter()
            scores.append(self.score_columns(cols, batch_size))
            latency.observe(time.perf_counter() - t0)
            tracks.inc(len(scores[-1]))
            for k, v in extra.items():
                extras.setdefault(k, []).append(v)
        score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        cut = self.threshold if threshold is None else float(threshold)
        selected = score >= cut if cut is not None else np.zeros(len(score), dtype=bool)
        return Prediction(score, selected, cut, {k: np.concatenate(v) for k, v in extras.items()})


def _species_of(directory: Path) -> str:
    try:
        return str(json.loads((directory / EXPORT_INFO_FILE).read_text(encoding="utf-8"))["species"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def open_model(model: Any, *, registry: Any = None, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a ModelVersion, a model id or an exported directory."""
    from autopid.publish.registry import ModelVersion, Registry

    if isinstance(model, Predictor):
        return model
    if isinstance(model, ModelVersion):
        model.verify()
        return Predictor(model.path, threads=threads, name=str(model.id))
    path = Path(model)
    if path.is_dir():
        if (path / "metadata.json").is_file():
            version = ModelVersion.load(path)
            version.verify()
            return Predictor(path, threads=threads, name=str(version.id))
        return Predictor(path, threads=threads)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    version = reg.get(str(model))
    return Predictor(version.path, threads=threads, name=str(version.id))


def predict(model: Any, data: Any, *, tree: str | None = None, registry: Any = None, threads: int | None = None,
            batch_size: int = DEFAULT_BATCH, threshold: float | None = None) -> Prediction:
    """Score ``data`` with ``model`` (see the module docstring for what both may be)."""
    return open_model(model, registry=registry, threads=threads).predict(
        data, tree=tree, batch_size=batch_size, threshold=threshold)
