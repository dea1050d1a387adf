"""Names of the files of an exported model and of its ONNX inputs and output (no heavy imports)."""

from __future__ import annotations

MODEL_FILE = "model.onnx"
SOURCE_MODEL_FILE = "model.pt"
COLUMNS_FILE = "columns_for_training.json"
SCALING_FILE = "scaling_params.json"
THRESHOLDS_FILE = "thresholds.json"
PREPROCESSING_FILE = "preprocessing.json"
EXPORT_INFO_FILE = "export.json"

FSE_INPUTS = ("features",)
MDA_INPUTS = ("x", "edge_index", "edge_type", "batch", "image", "rigidity", "tof")
OUTPUT = "probability"
