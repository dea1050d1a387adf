"""Publishing: ONNX export with parity checks, a versioned model registry with run
validity, lookup by run, the promotion gate and batch inference with ONNX Runtime.

    from autopid.publish import Registry, predict
    version = Registry().resolve("proton", run=567600)
    result = predict(version, "tracks.root")          # result.score, result.selected

Names are imported on first use, so that inference does not load PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DEFAULT_GUARDS": "gate", "GateDecision": "gate", "Guard": "gate", "decide": "gate", "evaluate_pair": "gate",
    "ModelId": "names", "check_name": "names", "parse_model_id": "names",
    "ExportResult": "onnx_export", "export_model": "onnx_export", "write_export": "onnx_export",
    "ParityError": "parity", "ParityReport": "parity",
    "Prediction": "predict", "Predictor": "predict", "open_model": "predict", "predict": "predict",
    "publish_model": "publisher",
    "ModelVersion": "registry", "Registry": "registry", "default_registry_root": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'autopid.publish' has no attribute {name!r}")
    return getattr(importlib.import_module(f"autopid.publish.{_WHERE[name]}"), name)
