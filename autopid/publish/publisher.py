"""From a trained model to a published registry version.

``publish_model`` finds the model (a run directory's ``model.pt``, a search study's
``best_model.pt``, or a ``.pt`` file), the preprocessing cache it was trained on, the
validity (the runs of the named period in the cache inputs, or an explicit range),
exports to ONNX with the parity check, chooses the thresholds, evaluates on the test
split (MC and Data), and publishes everything with its provenance.

The export is written into a private directory inside the registry
(``ROOT/.tmp/export-<pid>.<start>.<random>@<host>``, see
:meth:`autopid.publish.registry.Registry.export_dir`), removed when the publish ends; one
left by a killed publish is removed by the next registry operation once its owner
process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopid._logging import get_logger
from autopid.errors import ConfigError, InputError
from autopid.provenance import git_revision, package_versions
from autopid.publish.names import check_name
from autopid.publish.registry import ModelVersion, Registry, check_validity

if TYPE_CHECKING:
    from autopid.data import PreprocessedDataset

_log = get_logger(__name__)
_RUN_IN_NAME = re.compile(r"run[_-]?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSource:
    """Where a trained model and its provenance live."""

    model: Path
    directory: Path
    config: Path | None
    cache: Path | None


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def find_model(path: str | Path, species: str | None = None, period: str | None = None) -> ModelSource:
    """A run directory (``model.pt``), a study directory (``best_model.pt``), a search
    directory with one matching study (``studies/<species>-<period>/``) or a ``.pt`` file."""
    p = Path(path)
    if p.is_file():
        model, d = p, p.parent
    elif (p / "model.pt").is_file():
        model, d = p / "model.pt", p
    elif (p / "best_model.pt").is_file():
        model, d = p / "best_model.pt", p
    elif (p / "studies").is_dir():
        studies = sorted(s for s in (p / "studies").iterdir() if (s / "best_model.pt").is_file())
        if species:
            studies = [s for s in studies if s.name.split("-")[0] == species] or studies
        if period and len(studies) > 1:
            studies = [s for s in studies if s.name == f"{species}-{period}"] or studies
        if len(studies) != 1:
            names = ", ".join(s.name for s in studies) or "none with best_model.pt"
            raise ConfigError(f"{p}: pick one study directory (studies: {names})")
        model, d = studies[0] / "best_model.pt", studies[0]
    elif not p.exists():
        raise ConfigError(f"{p}: not found")
    else:
        raise ConfigError(f"{p}: no model.pt or best_model.pt (expected a training run or search study directory)")
    config = next((d / n for n in ("config.yaml", "best_config.yaml") if (d / n).is_file()), None)
    info = _json(d / "result.json") or _json(d / "summary.json")
    cache = Path(info["cache"]) if info.get("cache") else None
    return ModelSource(model, d, config, cache)


def find_dataset(source: ModelSource, cache_key: str, cache: str | Path | None = None) -> PreprocessedDataset:
    """The cache entry the model was trained on (its manifest key must match)."""
    from autopid.preprocess.cache import default_cache_root, read_manifest

    candidates: list[Path] = []
    if cache is not None:
        candidates.append(Path(cache))
    if source.cache is not None:
        candidates.append(source.cache)
    roots = [default_cache_root()]
    if source.config is not None:
        import yaml

        try:
            cfg = yaml.safe_load(source.config.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError):
            cfg = {}
        if cfg.get("cache_dir"):
            roots.insert(0, Path(cfg["cache_dir"]).expanduser())
    for root in roots:
        candidates += sorted((root / "preprocess").glob(f"*-{cache_key[:16]}"))
    for c in candidates:
        m = read_manifest(c)
        if m is not None and m.get("key") == cache_key:
            from autopid.data import PreprocessedDataset

            return PreprocessedDataset(c)
    if cache is not None:
        raise ConfigError(f"{cache}: not the cache entry {source.model} was trained on (key {cache_key[:16]})")
    raise ConfigError(f"{source.model}: cannot find its preprocessing cache (key {cache_key[:16]}); "
                      "pass --cache ENTRY_DIR")


def period_runs(ds: PreprocessedDataset, period: str) -> tuple[int, int]:
    """First and last run of ``period`` among the cache inputs (files under a directory
    named after the period): the run branch of each file, else ``run<N>`` in its name."""
    import numpy as np

    from autopid.publish.inputs import cache_config

    check_name(period, "period")
    run_branch = cache_config(ds).get("run_branch", "run")
    inputs = [i for i in ds.manifest.get("inputs", []) if period in Path(i["path"]).parts]
    if not inputs:
        seen = sorted({Path(i["path"]).parts[-3] for i in ds.manifest.get("inputs", []) if len(Path(i["path"]).parts) > 2})
        raise ConfigError(f"{ds.path}: no input file lies under a directory named {period!r} (seen: "
                          f"{', '.join(seen) or 'none'}); pass the run range with --runs FIRST-LAST")
    runs: list[int] = []
    for item in inputs:
        path = Path(item["path"])
        try:
            import uproot

            with uproot.open(path) as fh:
                values = fh[item["tree"]][run_branch].array(library="np")
            if len(values):
                runs += [int(np.min(values)), int(np.max(values))]
                continue
        except Exception as exc:  # the file may be gone: fall back to its name
            _log.debug("reading %s from %s failed: %s", run_branch, path, exc)
        m = _RUN_IN_NAME.search(path.name)
        if m is None:
            raise ConfigError(f"{path}: cannot read its runs (file unreadable, no run number in its name); "
                              "pass --runs FIRST-LAST")
        runs.append(int(m.group(1)))
    return min(runs), max(runs)


def config_hash(source: ModelSource, payload: dict[str, Any]) -> dict[str, Any]:
    """sha256 of the resolved training config (the run's YAML, else the model's own settings)."""
    if source.config is not None:
        return {"sha256": hashlib.sha256(source.config.read_bytes()).hexdigest(), "source": str(source.config)}
    own = {k: payload.get(k) for k in ("family", "params", "species", "domain_head", "cache_key")}
    text = json.dumps(own, sort_keys=True, default=str)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "source": f"{source.model} (model settings)"}


def _baseline(baseline: str | Path | dict[str, Any] | None) -> dict[str, Any] | None:
    if baseline is None or isinstance(baseline, dict):
        return baseline
    path = Path(baseline)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc


def publish_model(path: str | Path, *, species: str, period: str | None = None, runs: tuple[int, int] | None = None,
                  registry: Registry | str | Path | None = None, cache: str | Path | None = None,
                  baseline_metrics: str | Path | dict[str, Any] | None = None, tolerance: float | None = None,
                  max_eval_rows: int | None = 200_000, threads: int | None = 1,
                  extra_metadata: dict[str, Any] | None = None, once_key: str | None = None) -> ModelVersion:
    """Export, check, evaluate and publish a trained model; returns the new version.

    ``extra_metadata`` is recorded under its own keys (e.g. ``retrain``: the job, period
    and run that published it, so that a retried run can find its own publication).
    ``once_key``: publish only if no version carries this key yet, else raise
    :class:`~autopid.publish.registry.AlreadyPublished` (see :meth:`Registry.publish`)."""
    from autopid.publish.evaluation import held_out_metrics
    from autopid.publish.files import EXPORT_INFO_FILE
    from autopid.publish.onnx_export import write_export
    from autopid.publish.predict import Predictor
    from autopid.train import artifacts

    check_name(species, "species")
    if period is not None:
        check_name(period, "period")
    if period is None and runs is None:
        raise ConfigError("give the validity: a period (its runs come from the cache inputs) or a run range")
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    source = find_model(path, species, period)
    payload = artifacts.load_checkpoint(source.model)
    if payload.get("format") != 1:
        raise InputError(f"{source.model}: unknown model format {payload.get('format')!r}")
    if payload.get("species") != species:
        raise ConfigError(f"{source.model}: the model selects {payload.get('species')!r}, not {species!r}")
    ds = find_dataset(source, str(payload.get("cache_key")), cache)
    experiment = check_name(str(ds.manifest.get("experiment") or "other"), "experiment")
    first, last = runs if runs is not None else period_runs(ds, str(period))
    validity = check_validity({"runs": [first, last], "periods": [period] if period else []})

    if once_key is not None and (done := reg.published_for(experiment, species, once_key)) is not None:
        from autopid.publish.registry import AlreadyPublished

        raise AlreadyPublished(once_key, done)  # before the export; checked again atomically at the rename
    work = reg.export_dir()
    try:
        result = write_export(source.model, ds, work, tolerance=tolerance, threads=threads)
        predictor = Predictor(work, threads=threads, apply_selection=False)  # scores cache rows, already selected
        metrics = held_out_metrics(predictor, ds, species, float(predictor.threshold), max_rows=max_eval_rows)
        export_info = _json(work / EXPORT_INFO_FILE)
        from autopid.publish.evaluation import jsonable

        meta = jsonable({
            "experiment": experiment, "species": species, "family": result.family, "validity": validity,
            "training_data": {"dataset": ds.manifest.get("dataset"), "cache_key": ds.manifest.get("key"),
                              "inputs": ds.manifest.get("inputs", [])},
            "config": config_hash(source, payload),
            "source_model": {**export_info.get("source_model", {}), "directory": str(source.directory)},
            "model_params": payload.get("params"), "domain_head_dropped": bool(payload.get("domain_head")),
            "thresholds": result.thresholds, "parity": result.parity.to_dict(), "onnx": export_info.get("onnx"),
            "selection": export_info.get("selection"),  # what predict applies before scoring
            "metrics": metrics, "baseline_metrics": _baseline(baseline_metrics),
            "git_revision": git_revision(), "versions": package_versions(),
            "host": platform.node(), "user": os.environ.get("USER", ""),
            **(extra_metadata or {}),
        })
        version = reg.publish(work, meta, once_key=once_key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log.info("published %s (runs %d-%d)", version.id, first, last)
    return version
