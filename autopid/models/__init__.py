"""autopid's models: FSE+attention (ALICE) and MDA (AMS), with gradient reversal."""

from __future__ import annotations

from autopid.models.fse import FSEAttention, ModelOutput
from autopid.models.grl import DomainHead, dann_lambda, grad_reverse
from autopid.models.mda import MDA
from autopid.models.mda_branches import ClusterCNN, TrackerGNN, VectorMLP

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
