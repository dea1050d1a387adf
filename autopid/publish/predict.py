"""Batch inference with ONNX Runtime on a published model.

``predict(model, data)`` scores a ROOT file (TTree or RNTuple: a path, plus the tree
name unless the model records one), a pandas DataFrame, a mapping of arrays, an awkward
Array of records or a NumPy array (``[rows, F]`` in the order of
``columns_for_training.json``), in batches, and returns the probability and the boolean
selection at the threshold from ``thresholds.json``.

Raw inputs are read as preprocessing read them: sentinel values become NaN, then **the
selection the model was trained under** (``preprocessing.json``: the dataset's
preselection cuts and required features) keeps the entries training could have seen,
then the missing-detector rules apply (the FSE graph applies them itself; MDA inputs
get them in NumPy before the graphs are built). Only kept entries are scored:
``Prediction.entry`` says which, and ``Prediction.selection`` how many each cut dropped
and why. ``apply_selection=False`` scores every entry. A model exported before
selections were recorded scores every entry, and says so. A table that holds only the
model's columns (a NumPy matrix, the cache's rows) cannot be selected: it is taken as
already selected, with a warning; any other input must hold every branch the selection
tests.

``model`` is a :class:`~autopid.publish.registry.ModelVersion`, a model id such as
``alice/proton/v0001`` (looked up in the registry), or a directory holding
``model.onnx`` and its side files (a registry version directory is checked against the
sha256 sums in its ``metadata.json`` first).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger, progress_enabled
from autopid.errors import ConfigError, InputError
from autopid.monitoring import metrics
from autopid.publish import inputs
from autopid.publish.files import EXPORT_INFO_FILE, MODEL_FILE, PREPROCESSING_FILE, THRESHOLDS_FILE
from autopid.publish.selection import NO_SELECTION, Selection, SelectionReport

DEFAULT_BATCH = 65_536  # entries read, selected and normalised at a time
# rows per ONNX Runtime call: small enough for the intermediate tensors to stay in the
# CPU caches (FSE: 19 tokens of 32 per track; MDA: ~20 nodes and ~60 edges per event).
# Measured on 2 cores: FSE 40k tracks/s at 512 per call, 12k at 2048, 6k at 65536;
# MDA 50-58k events/s from 128 to 1024 per call
FSE_ORT_ROWS = 512
MDA_ORT_EVENTS = 512
PROGRESS_MIN_ENTRIES = 200_000  # a bar for files that take more than a few seconds
NAN_CHECK_MIN_ROWS = 100  # fewer rows may all lack a detector by chance

_log = get_logger(__name__)


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
        raise InputError(f"{path}: ONNX Runtime cannot load the model ({type(exc).__name__}: {exc}); "
                         "the file is corrupt or not an ONNX model") from exc


@dataclass
class Prediction:
    """Scores (probability of the signal species) of the entries kept by the selection,
    their boolean selection at the threshold, their entry numbers in the input and
    pass-through columns (run, event)."""

    score: np.ndarray
    selected: np.ndarray
    threshold: float | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    entry: np.ndarray | None = None
    selection: SelectionReport | None = None

    def to_frame(self) -> pd.DataFrame:
        out = pd.DataFrame({"entry": self.entry} if self.entry is not None else {})
        for k, v in self.extra.items():
            out[k] = v
        out["score"] = self.score
        out["selected"] = self.selected
        return out


def _is_root_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike)) and (str(data).endswith(".root") or Path(data).is_file())


class Predictor:
    """An ONNX Runtime session on one exported model directory, reused across calls.

    ``apply_selection`` is the default of :meth:`predict` (True: the recorded selection
    is applied to raw inputs)."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, name: str | None = None,
                 apply_selection: bool = True, domain: str | None = None) -> None:
        self.directory = Path(directory)
        self.name = name or str(self.directory)
        if not (self.directory / MODEL_FILE).is_file():
            raise InputError(f"{self.directory}: no {MODEL_FILE} here (not an exported model directory)")
        self.layout = inputs.StoredLayout.from_dir(self.directory)
        self.spec = self.layout.spec
        self.family: str = self.spec["family"]
        self.selection = Selection.from_spec(self.spec, str(self.directory / PREPROCESSING_FILE))
        self.apply_selection = apply_selection
        # MDA: whose tracker gain map calibrates the charges (None: the recorded default, Data)
        self.domain = domain
        self.threshold: float | None = None
        self.thresholds: dict[str, Any] = {}
        tpath = self.directory / THRESHOLDS_FILE
        if tpath.is_file():
            try:
                self.thresholds = json.loads(tpath.read_text(encoding="utf-8"))
                self.threshold = float(self.thresholds[self.thresholds.get("default", "best_f1")])
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{tpath}: not a thresholds file ({type(exc).__name__}: {exc})") from exc
        self.session = make_session(self.directory / MODEL_FILE, threads)
        self._labels = (str(self.spec.get("experiment") or "other"), _species_of(self.directory), self.family)
        self._warned: set[str] = set()

    # -- scoring -----------------------------------------------------------------------
    def score_matrix(self, x: np.ndarray, batch_size: int = FSE_ORT_ROWS) -> np.ndarray:
        """FSE: probabilities of a raw ``[N, F]`` float32 matrix (missing = NaN)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = max(batch_size, 1)
        out = [self.session.run(None, {"features": x[i:i + step]})[0] for i in range(0, len(x), step)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def score_mda(self, cols: Mapping[str, np.ndarray], batch_size: int = MDA_ORT_EVENTS,
                  domain: str | None = None) -> np.ndarray:
        """MDA: raw columns (missing rules applied), charges calibrated with the model's gain
        map of ``domain`` (default: the predictor's, else Data), normalised once, graphs
        built with NumPy per ONNX Runtime call of at most ``batch_size`` events."""
        from autopid.publish.mda_inputs import events

        if isinstance(cols, pd.DataFrame):
            cols = {str(c): cols[c].to_numpy() for c in cols.columns}
        ev = events(cols, self.layout, domain=domain or self.domain)
        step = max(batch_size, 1)
        out = [self.session.run(None, ev.feeds(i, i + step))[0] for i in range(0, len(ev), step)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def score_columns(self, cols: Mapping[str, np.ndarray], batch_size: int = DEFAULT_BATCH,
                      domain: str | None = None) -> np.ndarray:
        """Probabilities of raw columns (sentinels already NaN; the selection not applied);
        ONNX Runtime runs on at most ``batch_size`` rows, and at most FSE_ORT_ROWS /
        MDA_ORT_EVENTS."""
        n = len(next(iter(cols.values()))) if cols else 0
        if n == 0:
            return np.zeros(0, np.float32)
        if self.family == "fse":
            return self.score_matrix(inputs.raw_matrix(cols, self.spec, apply_rules=False),
                                     min(batch_size, FSE_ORT_ROWS))
        work = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
        inputs.apply_missing_rules(work, self.spec, self.name)
        return self.score_mda(work, min(batch_size, MDA_ORT_EVENTS), domain)

    # -- what an input is and what applies to it ---------------------------------------------
    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per predictor: a loop over files does not repeat it
            self._warned.add(message)
            _log.warning("%s", message)

    def _model_only(self, keys: list[str]) -> bool:
        """The input holds nothing but the model's columns (or their branches), the missing
        rules' branches, run and event: model inputs, as the cache stores them."""
        allowed = {*self.spec["columns"], *self.spec["features"], *inputs.rule_branches(self.spec),
                   self.spec.get("run_branch"), self.spec.get("event_branch")}
        return set(keys) <= allowed

    def _selection_for(self, src: inputs.Source, apply: bool) -> tuple[Selection | None, SelectionReport]:
        """The selection to apply to ``src`` (None: none), and the report to fill."""
        sel = self.selection
        if sel is None:
            if apply:
                self._warn(f"{self.name}: {NO_SELECTION}")
            return None, SelectionReport(recorded=False, applied=False, notes=[NO_SELECTION])
        if not apply:
            note = "not applied on request (--no-selection, apply_selection=False): every entry is scored"
            return None, SelectionReport(recorded=True, applied=False, notes=[note])
        have = set(src.keys)
        lacking = [b for b in sel.branches if b not in have]
        if not lacking:
            return sel, sel.new_report()
        cuts = sel.describe()
        if not src.is_root and self._model_only(src.keys):
            note = (f"{src.where}: holds only the model's columns, not {', '.join(map(repr, lacking))}, so the "
                    f"model's selection ({cuts}) cannot be applied: the rows are taken as already selected "
                    "(pass apply_selection=False to say so)")
            self._warn(note)
            return None, SelectionReport(recorded=True, applied=False, notes=[note])
        raise src.missing_error(lacking, f"tested by the model's selection ({cuts}); pass --no-selection "
                                         "(apply_selection=False) to score every entry instead")

    def _source(self, data: Any, tree: str | None) -> inputs.Source:
        if _is_root_path(data):
            if not Path(data).is_file():
                raise InputError(f"{data}: file not found")
            return inputs.root_source(data, tree, self.spec)
        return inputs.table_source(data, self.spec)

    # -- the batch loop ---------------------------------------------------------------------
    def predict(self, data: Any, *, tree: str | None = None, batch_size: int = DEFAULT_BATCH,
                threshold: float | None = None, apply_selection: bool | None = None,
                progress: bool | None = None, domain: str | None = None) -> Prediction:
        """Score the entries of ``data`` that pass the model's selection, in batches;
        ``selected = score >= threshold`` (the model's by default). ``apply_selection``
        overrides the predictor's default; ``progress`` forces the bar on or off (default:
        on a terminal, for inputs of at least 200k entries). ``domain`` (MDA): ``"data"``
        (default) or ``"mc"``, whose tracker charge gain map calibrates the input."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        src = self._source(data, tree)
        names, missing = inputs.model_reads(self.spec, src.keys)
        if missing:
            if src.is_root:
                raise src.missing_error(missing, "needed as a model input")
            raise InputError(inputs.lacking_message(src.where, missing))
        sel, report = self._selection_for(src, self.apply_selection if apply_selection is None else apply_selection)
        sel_names = sel.branches if sel is not None else []
        keep_names = [b for b in (self.spec.get("run_branch"), self.spec.get("event_branch")) if b and b in src.keys]
        read = list(dict.fromkeys([*names, *sel_names, *keep_names]))
        src.check_types(read)

        show = progress if progress is not None else (progress_enabled() and src.entries >= PROGRESS_MIN_ENTRIES)
        scores: list[np.ndarray] = []
        entries: list[np.ndarray] = []
        extras: dict[str, list[np.ndarray]] = {k: [] for k in keep_names}
        seen = _Seen(self.spec, sel_names)
        latency = metrics.INFERENCE_LATENCY.labels(*self._labels)
        tracks = metrics.INFERENCE_TRACKS.labels(*self._labels)
        bar = _bar(src) if show else None
        try:
            for start in range(0, src.entries, batch_size):
                stop = min(start + batch_size, src.entries)
                arrays = src.read(read, start, stop)
                if sel is not None:
                    floats = inputs.selection_floats(arrays, sel_names, self.spec.get("sentinels", []), src.where)
                    seen.selection(floats)
                    rows = np.flatnonzero(sel.mask(floats, report, src.where))
                    if len(rows) < stop - start:
                        arrays = {k: v[rows] for k, v in arrays.items()}
                else:
                    rows = np.arange(stop - start)
                    report.entries += stop - start
                    report.kept += stop - start
                entry = rows + start
                cols = inputs.columns_from_branches({k: arrays[k] for k in names}, self.spec, src.where, entry)
                seen.model(cols)
                t0 = time.perf_counter()
                scores.append(self.score_columns(cols, batch_size, domain))
                latency.observe(time.perf_counter() - t0)
                tracks.inc(len(scores[-1]))
                entries.append(entry)
                for k in keep_names:
                    extras[k].append(np.asarray(arrays[k]))
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if bar is not None:
                bar.close()
        found = seen.notes(src, report)
        report.notes += found
        for note in found if src.is_root or src.entries else []:  # an empty table is no news
            self._warn(note)
        score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        cut = self.threshold if threshold is None else float(threshold)
        selected = score >= cut if cut is not None else np.zeros(len(score), dtype=bool)
        return Prediction(score, selected, cut, {k: _cat(v) for k, v in extras.items()},
                          entry=_cat(entries).astype(np.int64), selection=report)


def _bar(src: inputs.Source) -> Any:
    # made only when shown: any tqdm bar, even a disabled one, starts tqdm's monitor thread
    from tqdm.auto import tqdm

    return tqdm(total=src.entries, unit="entries", unit_scale=True, desc=f"predict {Path(src.where).name}",
                leave=False, file=sys.stderr, dynamic_ncols=True)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class _Seen:
    """Which model branches and selection branches held a value anywhere: a branch missing
    in every entry is a wrong mapping or a dead detector, never chance, in a large input."""

    def __init__(self, spec: Mapping[str, Any], sel_names: list[str]) -> None:
        self.branch_of = {c: b for b, v in spec["features"].items() for c in v["columns"]}
        self.model_seen = {b: False for b in spec["features"]}
        self.sel_seen = {b: False for b in sel_names}
        self.rows = 0

    def model(self, cols: Mapping[str, np.ndarray]) -> None:
        self.rows += len(next(iter(cols.values()))) if cols else 0
        for col, values in cols.items():
            b = self.branch_of.get(col)
            if b is not None and not self.model_seen[b] and np.isfinite(values).any():
                self.model_seen[b] = True

    def selection(self, floats: Mapping[str, np.ndarray]) -> None:
        for b, values in floats.items():
            if not self.sel_seen[b] and np.isfinite(values).any():
                self.sel_seen[b] = True

    def notes(self, src: inputs.Source, report: SelectionReport) -> list[str]:
        out = []
        if src.entries == 0:
            out.append(f"{src.where}: the input is empty (0 entries); nothing to score")
            return out
        for b, ok in self.sel_seen.items():
            if not ok:
                out.append(f"{src.where}: branch {b!r}, which the selection tests, is missing (NaN or a sentinel) "
                           f"in all {src.entries} entries, so every entry is dropped; check the branch mapping")
        if report.applied and report.kept == 0 and all(self.sel_seen.values()):
            out.append(f"{src.where}: no entry of {src.entries} passes the model's selection")
        if self.rows >= NAN_CHECK_MIN_ROWS:
            for b, ok in self.model_seen.items():
                if not ok:
                    out.append(f"{src.where}: feature {b!r} is missing (NaN or a sentinel) in all {self.rows} "
                               "scored entries; they are scored as if that detector were absent: check the "
                               "branch mapping")
        return out


def _species_of(directory: Path) -> str:
    try:
        return str(json.loads((directory / EXPORT_INFO_FILE).read_text(encoding="utf-8"))["species"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def open_model(model: Any, *, registry: Any = None, threads: int | None = None,
               apply_selection: bool = True) -> Predictor:
    """A :class:`Predictor` for a ModelVersion, a model id or an exported directory."""
    from autopid.publish.registry import ModelVersion, Registry

    if isinstance(model, Predictor):
        return model
    kw: dict[str, Any] = {"threads": threads, "apply_selection": apply_selection}
    if isinstance(model, ModelVersion):
        model.verify()
        return Predictor(model.path, name=str(model.id), **kw)
    path = Path(model)
    if path.is_dir():
        if (path / "metadata.json").is_file():
            version = ModelVersion.load(path)
            version.verify()
            return Predictor(path, name=str(version.id), **kw)
        return Predictor(path, **kw)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    version = reg.get(str(model))
    return Predictor(version.path, name=str(version.id), **kw)


def predict(model: Any, data: Any, *, tree: str | None = None, registry: Any = None, threads: int | None = None,
            batch_size: int = DEFAULT_BATCH, threshold: float | None = None, apply_selection: bool = True,
            progress: bool | None = None) -> Prediction:
    """Score ``data`` with ``model`` (see the module docstring for what both may be)."""
    return open_model(model, registry=registry, threads=threads).predict(
        data, tree=tree, batch_size=batch_size, threshold=threshold, apply_selection=apply_selection,
        progress=progress)
