"""autopid's models: FSE+attention (ALICE) and MDA (AMS), with gradient reversal.

Names are imported on first use (module ``__getattr__``), so that FSE code never imports
the MDA branches and PyTorch Geometric with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopid._lazy import lazy_exports

if TYPE_CHECKING:
    from autopid.models.fse import FSEAttention, ModelOutput
    from autopid.models.grl import DomainHead, dann_lambda, grad_reverse
    from autopid.models.mda import MDA
    from autopid.models.mda_branches import ClusterCNN, TrackerGNN, VectorMLP

_WHERE = {
    "FSEAttention": "fse",
    "ModelOutput": "fse",
    "DomainHead": "grl",
    "dann_lambda": "grl",
    "grad_reverse": "grl",
    "MDA": "mda",
    "ClusterCNN": "mda_branches",
    "TrackerGNN": "mda_branches",
    "VectorMLP": "mda_branches",
}

__all__ = [
    "MDA",
    "ClusterCNN",
    "DomainHead",
    "FSEAttention",
    "ModelOutput",
    "TrackerGNN",
    "VectorMLP",
    "dann_lambda",
    "grad_reverse",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__, globals())
