"""Export a trained model to ONNX, with the domain head dropped and a dynamic batch size.

**FSE** (ALICE): the graph takes the *raw* feature matrix ``features [B, F]`` (float32,
columns in ``columns_for_training.json`` order, missing = NaN, sentinel values allowed)
and does everything preprocessing and the loader did: sentinels to NaN, the dataset's
missing-detector rules (e.g. TOF blanked where fP < 0.5), the transforms (``signed_log``,
``inverse``), the stored normalisation (in float64, as in Python), then the set of
(feature id, value) pairs with ``ids = arange(F)`` for every row and
``padding_mask = ~isfinite``. The transformer masks padding everywhere, so this equals
the compacted batch of :func:`autopid.data.to_pairs`. Output: ``probability [B]``.

**MDA** (AMS): building the hit graph is data dependent (a node per present hit, edges
between present hits), which an ONNX graph with static control flow cannot do. The
exported graph therefore takes the loader's tensors, ``x [N, 6]``, ``edge_index [2, E]``
(int64), ``edge_type [E]`` (int64), ``batch [N]`` (int64), ``image [B, 1, L, S]``,
``rigidity [B, R]``, ``tof [B, K]``, as :class:`autopid.data.MDADataset` and
:func:`autopid.data.mda_dataloader` build them for training (inference builds the same
arrays with NumPy alone: :mod:`autopid.publish.mda_inputs`, normalised from the
published ``scaling_params.json``), and returns ``probability [B]``. PyG's
``global_max_pool`` cannot be exported by the TorchScript exporter (its ONNX branch
fails in this torch), and the ``ScatterElements`` of ``scatter_add`` are slow in ONNX
Runtime, so the exported tracker branch writes the GINE steps and the pooling out with
row scatters (``ScatterND``, opset 18) on the same weights; parity against the
unmodified PyTorch model is checked at every export.

**Selection**: ``preprocessing.json`` (and ``export.json``) record the dataset's
preselection cuts and required features (``selection``), which
:class:`autopid.publish.predict.Predictor` applies to raw inputs before scoring.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): the torch.export
based exporter needs ``onnxscript``, which autopid does not depend on.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from autopid.errors import AutopidError, ConfigError
from autopid.models.mda_branches import NUM_EDGE_TYPES, TrackerGNN
from autopid.publish.files import (
    COLUMNS_FILE,
    EXPORT_INFO_FILE,
    FSE_INPUTS,
    MDA_INPUTS,
    MODEL_FILE,
    OUTPUT,
    PREPROCESSING_FILE,
    SCALING_FILE,
    SOURCE_MODEL_FILE,
    THRESHOLDS_FILE,
)
from autopid.train import core

OPSET = 18


def without_domain_head(model: nn.Module, payload: Mapping[str, Any], ds: Any) -> nn.Module:
    """The same network rebuilt without its Data-vs-MC head (weights copied, eval mode)."""
    plain = core.build_model(payload["family"], ds, dict(payload["params"]), domain_head=False)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("domain.")}
    plain.load_state_dict(state, strict=True)
    return plain.eval()


def _cut(x: torch.Tensor, op: str, value: Any) -> torch.Tensor:
    """:func:`autopid.preprocess._chunk.cut_mask` in torch (NaN compares false, as in NumPy)."""
    if op == "<":
        return x < value
    if op == "<=":
        return x <= value
    if op == ">":
        return x > value
    if op == ">=":
        return x >= value
    if op == "==":
        return x == value
    if op == "!=":
        return x != value
    if op == "abs<":
        return torch.abs(x) < value
    if op == "between":
        lo, hi = value
        return (x >= lo) & (x <= hi)
    if op == "in":
        hit = x == float(value[0])
        for v in value[1:]:
            hit = hit | (x == float(v))
        return hit
    raise ConfigError(f"missing rule: unknown operator {op!r}")


class RawFSE(nn.Module):
    """Raw features ``[B, F]`` -> probability ``[B]``: preprocessing, pairs and the FSE model.

    Args:
        model: an :class:`~autopid.models.FSEAttention` without domain head, in eval mode.
        columns: the model's columns, in input order.
        mean, std: the normalisation of those columns.
        transforms: column -> ``signed_log`` | ``inverse``.
        missing_rules: ``[{"columns": [...], "when": {"branch", "op", "value"}}]`` with the
            rule columns already expanded to model columns.
        sentinels: raw values that mean "missing".
    """

    def __init__(self, model: nn.Module, columns: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 transforms: Mapping[str, str], missing_rules: Sequence[Mapping[str, Any]],
                 sentinels: Sequence[float]) -> None:
        super().__init__()
        if getattr(model, "num_outputs", 1) != 1:
            raise ConfigError("only single-species FSE models (num_outputs = 1) can be exported")
        self.model = model
        self.columns = list(columns)
        index = {c: i for i, c in enumerate(self.columns)}
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float64))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float64))
        self.register_buffer("ids", torch.arange(len(self.columns), dtype=torch.long))
        self.sentinels = [float(s) for s in sentinels]
        self.rules: list[tuple[int, str, Any, list[int]]] = []
        for rule in missing_rules:
            when = rule["when"]
            if when["branch"] not in index:
                raise ConfigError(
                    f"missing rule on {when['branch']!r}: that branch is not a model input, so the ONNX graph "
                    "cannot apply the rule")
            targets = [index[c] for c in rule["columns"] if c in index]
            self.rules.append((index[when["branch"]], when["op"], when["value"], targets))
        self.transform_of = [(index[c], t) for c, t in transforms.items() if c in index]
        for _, t in self.transform_of:
            if t not in ("signed_log", "inverse"):
                raise ConfigError(f"transform {t!r} cannot be exported")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.to(torch.float64)
        nan = torch.full_like(x, float("nan"))
        for s in self.sentinels:
            x = torch.where(x == s, nan, x)
        cols = list(x.unbind(dim=1))
        nan1 = nan[:, 0]
        for j, op, value, targets in self.rules:  # one after the other, as in preprocessing
            hit = _cut(cols[j], op, value)
            for t in targets:
                cols[t] = torch.where(hit, nan1, cols[t])
        for j, kind in self.transform_of:
            if kind == "signed_log":
                cols[j] = torch.sign(cols[j]) * torch.log1p(torch.abs(cols[j]))
            else:
                inv = 1.0 / cols[j]
                cols[j] = torch.where(torch.isfinite(inv), inv, nan1)
        z = (torch.stack(cols, dim=1) - self.mean) / self.std
        present = torch.isfinite(z)
        values = torch.where(present, z, torch.zeros_like(z)).to(torch.float32)
        ids = self.ids.unsqueeze(0).expand(values.shape[0], -1)
        return torch.sigmoid(self.model(ids, values, ~present).logits)


class _ScatterRows(torch.autograd.Function):
    """Rows of ``updates`` reduced into rows ``index`` of ``data`` (``add`` or ``max``).

    Exported as one ONNX ``ScatterND`` with ``indices [E, 1]``: ONNX Runtime reduces
    whole rows there, about 20 times faster than the ``ScatterElements`` (one index per
    element, wrapped in ``If`` nodes) that ``scatter_add`` / ``scatter_reduce`` export to,
    which took 80 % of the MDA graph's time.
    """

    @staticmethod
    def forward(ctx: Any, data: torch.Tensor, index: torch.Tensor, updates: torch.Tensor,
                reduction: str) -> torch.Tensor:
        if reduction == "add":
            return data.index_add(0, index, updates)
        return data.scatter_reduce(0, index.unsqueeze(1).expand_as(updates), updates, reduce="amax",
                                   include_self=True)

    @staticmethod
    def symbolic(g: Any, data: Any, index: Any, updates: Any, reduction: str) -> Any:
        axis = g.op("Constant", value_t=torch.tensor([1], dtype=torch.long))
        return g.op("ScatterND", data, g.op("Unsqueeze", index, axis), updates, reduction_s=reduction)


def scatter_rows(data: torch.Tensor, index: torch.Tensor, updates: torch.Tensor, reduction: str) -> torch.Tensor:
    return _ScatterRows.apply(data, index, updates, reduction)  # type: ignore[no-any-return]


class ExportableTrackerGNN(nn.Module):
    """:class:`~autopid.models.mda_branches.TrackerGNN` with export-friendly message passing.

    Same weights and the same result: each GINE step is written out
    (``h_i' = nn((1 + eps) h_i + sum_j ReLU(h_j + lin(e_ij)))``, PyG's ``GINEConv``) and
    its sum, the mean pooling (sums and counts) and the max pooling (from ``-inf``; an
    event without hits pools to 0, as PyG does) are row scatters (:func:`scatter_rows`).
    The number of events comes from the batch, so it stays dynamic.
    """

    def __init__(self, gnn: TrackerGNN) -> None:
        super().__init__()
        self.gnn = gnn

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                batch: torch.Tensor, num_graphs: Any) -> torch.Tensor:
        g = self.gnn
        edge_attr = nn.functional.one_hot(edge_type, NUM_EDGE_TYPES).to(x.dtype)
        src, dst = edge_index[0], edge_index[1]  # PyG's flow: messages go from source to target
        h = g.act(g.inp(x))
        for conv in g.convs:
            msg = torch.relu(h.index_select(0, src) + conv.lin(edge_attr))
            agg = scatter_rows(torch.zeros_like(h), dst, msg, "add")
            h = h + g.dropout(g.act(conv.nn(agg + (1 + conv.eps) * h)))
        sums = scatter_rows(h.new_zeros((num_graphs, h.shape[1])), batch, h, "add")
        counts = scatter_rows(h.new_zeros((num_graphs, 1)), batch, torch.ones_like(h[:, :1]), "add")
        mean = sums / counts.clamp(min=1)
        mx = scatter_rows(torch.full_like(sums, float("-inf")), batch, h, "max")
        mx = torch.where(counts > 0, mx, torch.zeros_like(mx))
        return g.out(torch.cat([mean, mx], dim=-1))


class GraphMDA(nn.Module):
    """Loader tensors -> probability ``[B]`` with an :class:`~autopid.models.MDA` (no domain head)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        if "gnn" in model.branches:
            model.branches["gnn"] = ExportableTrackerGNN(model.branches["gnn"])
        self.model = model

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor, batch: torch.Tensor,
                image: torch.Tensor, rigidity: torch.Tensor, tof: torch.Tensor) -> torch.Tensor:
        b = SimpleNamespace(x=x, edge_index=edge_index, edge_type=edge_type, batch=batch, image=image,
                            rigidity=rigidity, tof=tof, num_graphs=image.shape[0])
        return torch.sigmoid(self.model(b).logits)


def fse_module(model: nn.Module, payload: Mapping[str, Any], ds: Any, spec: Mapping[str, Any]) -> RawFSE:
    """The raw-input FSE module for ``spec`` (from :func:`autopid.publish.inputs.preprocessing_spec`)."""
    from autopid.publish.inputs import rule_columns

    norm = ds.normaliser
    index = {c: i for i, c in enumerate(norm.columns)}
    cols = list(spec["columns"])
    rules = [{"columns": rule_columns(spec, r, ds.manifest["features"]), "when": r["when"]}
             for r in spec.get("missing_rules", [])]
    return RawFSE(without_domain_head(model, payload, ds), cols,
                  [float(norm.mean[index[c]]) for c in cols], [float(norm.std[index[c]]) for c in cols],
                  spec.get("transforms", {}), rules, spec.get("sentinels", [])).eval()


def mda_module(model: nn.Module, payload: Mapping[str, Any], ds: Any) -> GraphMDA:
    return GraphMDA(without_domain_head(model, payload, ds)).eval()


def export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], path: str | Path, family: str,
                opset: int = OPSET) -> None:
    """Trace ``module`` on ``example`` and write the ONNX graph with dynamic batch axes."""
    if family == "fse":
        names = list(FSE_INPUTS)
        axes: dict[str, dict[int, str]] = {"features": {0: "tracks"}, OUTPUT: {0: "tracks"}}
    else:
        names = list(MDA_INPUTS)
        axes = {"x": {0: "nodes"}, "edge_index": {1: "edges"}, "edge_type": {0: "edges"}, "batch": {0: "nodes"},
                "image": {0: "events"}, "rigidity": {0: "events"}, "tof": {0: "events"}, OUTPUT: {0: "events"}}
    buf = io.BytesIO()
    try:
        # with autograd on (parameters require grad), nn.TransformerEncoderLayer keeps its
        # traceable path instead of the fused kernel, which has no ONNX symbolic
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, buf, dynamo=False, opset_version=opset, input_names=names,
                              output_names=[OUTPUT], dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        raise AutopidError(f"{path}: ONNX export of the {family} model failed ({type(exc).__name__}: {exc})") from exc
    Path(path).write_bytes(_relax_if_shapes(buf.getvalue()))


def _relax_if_shapes(model_bytes: bytes) -> bytes:
    """Drop the (wrong, rank-1) shapes the exporter declares on the outputs of the ``If``
    branches it wraps around ``ScatterElements``; ONNX Runtime warns about them on every run."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    changed = False
    for node in model.graph.node:
        if node.op_type != "If":
            continue
        for attr in node.attribute:
            if attr.name in ("then_branch", "else_branch"):
                for out in attr.g.output:
                    out.type.tensor_type.ClearField("shape")
                    changed = True
    if not changed:
        return model_bytes
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_io(family: str, n_columns: int) -> dict[str, Any]:
    """A description of the graph's inputs and output for ``metadata.json``."""
    if family == "fse":
        return {"inputs": {"features": ["tracks", n_columns, "float32: raw values in columns_for_training.json "
                                        "order, missing = NaN"]},
                "output": {OUTPUT: ["tracks", "float32"]}}
    return {"inputs": {"x": ["nodes", 6, "float32"], "edge_index": [2, "edges", "int64"],
                       "edge_type": ["edges", "int64"], "batch": ["nodes", "int64"],
                       "image": ["events", 1, "layers", "sides", "float32"], "rigidity": ["events", "R", "float32"],
                       "tof": ["events", "K", "float32"]},
            "output": {OUTPUT: ["events", "float32"]},
            "note": "inputs are autopid.data.MDADataset/mda_dataloader tensors (graphs are built in Python)"}


# -- the whole export: files, parity, thresholds ---------------------------------------------


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON and fsync it (the directory is renamed into place afterwards)."""
    import json
    import os

    from autopid.publish.evaluation import jsonable

    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(jsonable(obj), indent=1, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@dataclass
class ExportResult:
    """What :func:`write_export` wrote and checked."""

    directory: Path
    family: str
    species: str
    parity: Any
    thresholds: dict[str, Any]
    files: list[str] = field(default_factory=list)


def write_export(model_path: str | Path, ds: Any, directory: str | Path, *, tolerance: float | None = None,
                 per_pattern: int = 8, opset: int = OPSET, seed: int = 0, threads: int | None = 1,
                 max_threshold_rows: int | None = 200_000) -> ExportResult:
    """Export ``model_path`` (a ``model.pt`` trained on ``ds``) into the existing empty
    ``directory``: ``model.onnx``, ``columns_for_training.json``, ``scaling_params.json``,
    ``preprocessing.json``, ``thresholds.json``, ``export.json`` and a copy of ``model.pt``.
    Raises :class:`~autopid.publish.parity.ParityError` when ONNX Runtime and PyTorch
    disagree by more than ``tolerance`` (default 1e-5) on the parity sample."""
    import shutil

    from autopid.provenance import package_versions, sha256_file
    from autopid.publish import inputs, parity
    from autopid.publish.evaluation import choose_thresholds
    from autopid.publish.predict import Predictor
    from autopid.train import artifacts

    tol = parity.TOLERANCE if tolerance is None else float(tolerance)
    directory = Path(directory)
    model, payload = artifacts.load_model(model_path, ds)
    family, species = str(payload["family"]), str(payload["species"])
    if payload.get("cache_key") != ds.manifest.get("key"):
        raise ConfigError(f"{model_path}: trained on cache {str(payload.get('cache_key'))[:16]}, not on "
                          f"{ds.path} ({str(ds.manifest.get('key'))[:16]})")
    spec = inputs.preprocessing_spec(ds, family)
    if family == "mda" and payload.get("calibration"):  # the model's charge gain maps go with its inputs
        spec["mda"] = {**spec["mda"], "calibration": json.loads(payload["calibration"])}
    index = {c: i for i, c in enumerate(ds.normaliser.columns)}
    scaling = [[c, float(ds.normaliser.mean[index[c]]), float(ds.normaliser.std[index[c]])] for c in spec["columns"]]
    write_json(directory / COLUMNS_FILE, spec["columns"])
    write_json(directory / SCALING_FILE, scaling)
    write_json(directory / PREPROCESSING_FILE, spec)
    shutil.copyfile(model_path, directory / SOURCE_MODEL_FILE)

    module = fse_module(model, payload, ds, spec) if family == "fse" else mda_module(model, payload, ds)
    export_onnx(module, parity.example_inputs(family, ds, spec, seed=seed), directory / MODEL_FILE, family, opset)
    # parity and thresholds score the cache's rows, which passed the selection already
    predictor = Predictor(directory, threads=threads, apply_selection=False)
    report = parity.run_parity(model, family, ds, predictor, tolerance=tol, per_pattern=per_pattern, seed=seed,
                               where=str(model_path))
    thresholds = choose_thresholds(predictor, ds, species, max_rows=max_threshold_rows, seed=seed)
    write_json(directory / THRESHOLDS_FILE, thresholds)
    import torch

    info = {
        "family": family, "species": species, "domain_head_dropped": bool(payload.get("domain_head")),
        "source_model": {"path": str(Path(model_path).resolve()), "sha256": sha256_file(model_path)},
        "params": dict(payload["params"]), "cache_key": ds.manifest.get("key"), "cache": str(ds.path),
        "onnx": {"opset": opset, "exporter": f"torch.onnx (TorchScript, dynamo=False), torch {torch.__version__}",
                 **onnx_io(family, len(spec["columns"]))},
        "selection": spec["selection"], "parity": report.to_dict(), "versions": package_versions(),
    }
    write_json(directory / EXPORT_INFO_FILE, info)
    files = sorted(p.name for p in directory.iterdir() if p.is_file())
    return ExportResult(directory, family, species, report, thresholds, files)


def export_model(model_path: str | Path, ds: Any, out_dir: str | Path, **kwargs: Any) -> ExportResult:
    """:func:`write_export` into ``out_dir`` (which must not exist), atomically: the files
    are written in a hidden sibling directory renamed into place only when every check
    passed, so a refused or failed export leaves nothing visible."""
    import os
    import shutil
    import uuid

    out = Path(out_dir)
    if out.exists():
        raise ConfigError(f"{out}: already exists; an export never overwrites")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        result = write_export(model_path, ds, staging, **kwargs)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.directory = out
    return result
