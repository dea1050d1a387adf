"""autopid: automated machine-learning particle identification.

From ROOT files to a published, versioned model: simulate or ingest, preprocess with
Dask, train and tune with Ray, publish ONNX models with their run validity.
"""

from __future__ import annotations

from autopid.errors import AutopidError, ConfigError, InputError

__version__ = "0.1.0"

__all__ = ["AutopidError", "ConfigError", "InputError", "__version__"]
