"""Publishing: ONNX export with parity checks, a versioned model registry with run
validity, lookup by run, the promotion gate and batch inference with ONNX Runtime.

    from autopid.publish import Registry, predict
    version = Registry().resolve("proton", run=567600)
    result = predict(version, "tracks.root")          # result.score, result.selected
"""

from __future__ import annotations

from autopid.publish.gate import DEFAULT_GUARDS, GateDecision, Guard, decide, evaluate_pair
from autopid.publish.names import ModelId, check_name, parse_model_id
from autopid.publish.onnx_export import ExportResult, export_model, write_export
from autopid.publish.parity import ParityError, ParityReport
from autopid.publish.predict import Prediction, Predictor, open_model, predict
from autopid.publish.publisher import publish_model
from autopid.publish.registry import ModelVersion, Registry, default_registry_root

__all__ = [
    "DEFAULT_GUARDS",
    "ExportResult",
    "GateDecision",
    "Guard",
    "ModelId",
    "ModelVersion",
    "ParityError",
    "ParityReport",
    "Prediction",
    "Predictor",
    "Registry",
    "check_name",
    "decide",
    "default_registry_root",
    "evaluate_pair",
    "export_model",
    "open_model",
    "parse_model_id",
    "predict",
    "publish_model",
    "write_export",
]
