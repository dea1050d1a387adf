"""Simulators of ALICE-like tracks and AMS-like nuclei that write real ROOT files."""

from __future__ import annotations

from autopid.simulate._common import (
    DOMAINS,
    HIDDEN_PREFIX,
    PERIOD_MANIFEST,
    Experiment,
    default_first_run,
    read_period_manifest,
    simulate_period,
)
from autopid.simulate.alice import ALICE, AliceSimConfig, generate_alice
from autopid.simulate.ams import AMS, AmsSimConfig, generate_ams

EXPERIMENTS: dict[str, Experiment] = {"alice": ALICE, "ams": AMS}

__all__ = [
    "ALICE",
    "AMS",
    "DOMAINS",
    "EXPERIMENTS",
    "HIDDEN_PREFIX",
    "PERIOD_MANIFEST",
    "AliceSimConfig",
    "AmsSimConfig",
    "Experiment",
    "default_first_run",
    "generate_alice",
    "generate_ams",
    "read_period_manifest",
    "simulate_period",
]
