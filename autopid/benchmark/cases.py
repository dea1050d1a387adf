"""What a benchmark runs: the presets (sizes, training settings) and the datasets (cases).

The built-in cases simulate small ALICE-like and AMS-like periods and preprocess them with
the built-in dataset YAMLs; ``--dataset YAML`` adds any dataset (any branch names: the
classic baselines find their inputs through the YAML's ``roles``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from autopid._logging import get_logger
from autopid.config.dataset import (
    DatasetConfig,
    builtin_dataset_path,
    load_dataset_config,
)
from autopid.errors import ConfigError

_log = get_logger(__name__)

# The FSE configuration: the base of search_spaces/fse.yaml (the published architecture:
# pair embedding 19-128-32, encoder d=32 with feed-forward 128, 2 layers, attention pooling
# 32-64-32 with one softmax per embedding channel, classifier 32-64-1; Adam with exponential
# decay, batch 64; plus what made it learn within the budget: a value slope per feature,
# pre-LayerNorm layers with 4 heads, no dropout, lr 1e-3 decaying 0.9 per epoch over up to 24
# epochs, signal fraction 0.3), fixed, not tuned per species.
FSE_BEST: dict[str, Any] = {
    "model": {"family": "fse", "params": {"pooling": "channel", "value_input": "per_feature", "norm_first": True,
                                          "num_heads": 4, "dropout": 0.0}},
    "training": {"epochs": 24, "batch_size": 64, "lr": 1.0e-3, "lr_decay": 0.9, "signal_fraction": 0.3,
                 "lambda_max": 0.0, "max_train_rows": 8000, "max_eval_rows": 6000, "early_stopping_patience": 8},
}
# The MDA configuration: the base of search_spaces/mda.yaml (default branch sizes, DANN
# lambda_max 0.05, balanced signal and background, 10 epochs on up to 20k rows: with 4k rows
# for 4 epochs the MDA stayed below the L1 charge cut on MC).
MDA_BEST: dict[str, Any] = {
    "model": {"family": "mda", "params": {}},
    "training": {"epochs": 10, "batch_size": 128, "lr": 1.0e-3, "lambda_max": 0.05, "signal_fraction": 0.5,
                 "max_train_rows": 20000, "max_eval_rows": 4000, "early_stopping_patience": 3},
    # the space's objective.domain_penalty: the epoch kept is the best by that objective
    "domain_penalty": 0.25,
}


@dataclass(frozen=True)
class Preset:
    """Sizes and settings of one benchmark mode.

    ``alice_sim`` and ``ams_sim`` are (runs, events per run and domain) of the built-in
    simulated periods; ``baseline_trials`` is the Optuna budget of each learned baseline
    (0: its fixed defaults); ``max_test_rows`` bounds the test rows per domain.
    """

    name: str
    seeds: int
    alice_sim: tuple[int, int]
    ams_sim: tuple[int, int]
    fse: dict[str, Any]
    mda: dict[str, Any]
    baseline_trials: int
    max_test_rows: int | None
    mlp_epochs: int = 40
    sim_seed: int = 3
    notes: tuple[str, ...] = field(default_factory=tuple)

    def with_overrides(self, **kw: Any) -> Preset:
        return replace(self, **kw)


def _training(base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {**base, "model": dict(base["model"]), "training": {**base["training"], **kw}}


PRESETS: dict[str, Preset] = {
    # what --quick runs: about 10 minutes on 2 cores
    "quick": Preset("quick", seeds=3, alice_sim=(2, 20_000), ams_sim=(2, 150_000),
                    fse=FSE_BEST, mda=MDA_BEST, baseline_trials=6, max_test_rows=20_000),
    # without --quick: larger samples and longer training
    "full": Preset("full", seeds=3, alice_sim=(4, 50_000), ams_sim=(4, 250_000),
                   fse=_training(FSE_BEST, epochs=20, max_train_rows=50_000, max_eval_rows=10_000),
                   mda=_training(MDA_BEST, epochs=20, max_train_rows=50_000, max_eval_rows=10_000),
                   baseline_trials=12, max_test_rows=None, mlp_epochs=60),
    # for tests: seconds
    "tiny": Preset("tiny", seeds=2, alice_sim=(2, 1500), ams_sim=(2, 12_000),
                   fse=_training(FSE_BEST, epochs=1, max_train_rows=600, max_eval_rows=300),
                   mda=_training(MDA_BEST, epochs=1, max_train_rows=500, max_eval_rows=300),
                   baseline_trials=0, max_test_rows=2000, mlp_epochs=5),
}


@dataclass(frozen=True)
class Case:
    """One dataset of the benchmark: its label in the records and its species."""

    experiment: str
    dataset: DatasetConfig
    species: tuple[str, ...]
    origin: str  # where the dataset came from, for the Markdown header


# The second AMS target: sulfur (Z = 16), whose fragmentation background is chlorine
# breaking up between L1 and L2 (Cl -> S), with P and Cl tails in the inner-charge window.
AMS_SECOND_TARGET = "sulfur"
AMS_WINDOWS: dict[str, list[float]] = {"phosphorus": [14.5, 15.6], "sulfur": [15.5, 16.6]}


def experiment_label(cfg: DatasetConfig) -> str:
    return cfg.experiment if cfg.experiment != "other" else cfg.name


def builtin_case_configs(data_root: Path, chunk_size: int | None = None) -> list[tuple[DatasetConfig, str]]:
    """The built-in ALICE (pion, kaon, proton), AMS phosphorus and AMS sulfur datasets,
    pointed at the simulated files under ``data_root/{alice,ams}``."""
    out = []
    for name in ("alice", "ams"):
        raw = yaml.safe_load(builtin_dataset_path(name).read_text())
        for src in raw["sources"]:
            src["files"] = [str(data_root / name / "{period}" / src["domain"] / "*.root")]
        if chunk_size:
            raw["chunk_size"] = chunk_size
        if name == "alice":
            raw["targets"] = ["pion", "kaon", "proton"]
            out.append((DatasetConfig.model_validate(raw), "built-in alice.yaml"))
            continue
        out.append((DatasetConfig.model_validate({**raw, "targets": ["phosphorus"]}), "built-in ams.yaml"))
        # the same files, a sulfur selection: the inner-charge window moves to Z = 16
        second = dict(raw)
        second["name"] = f"ams_{AMS_SECOND_TARGET}"
        second["targets"] = [AMS_SECOND_TARGET]
        second["selection"] = [
            {**c, "value": AMS_WINDOWS[AMS_SECOND_TARGET]} if c.get("branch") == "trk_charge_inner" else c
            for c in raw.get("selection", [])
        ]
        out.append((DatasetConfig.model_validate(second),
                    f"built-in ams.yaml with targets [{AMS_SECOND_TARGET}] and inner charge in "
                    f"{AMS_WINDOWS[AMS_SECOND_TARGET]}"))
    return out


def cases_from_configs(configs: list[tuple[DatasetConfig, str]]) -> list[Case]:
    cases = []
    for cfg, origin in configs:
        species = tuple(cfg.targets) or tuple(cfg.species)
        cases.append(Case(experiment_label(cfg), cfg, species, origin))
    seen: dict[tuple[str, str], str] = {}
    for c in cases:
        for s in c.species:
            if (c.experiment, s) in seen:
                raise ConfigError(f"datasets {seen[(c.experiment, s)]!r} and {c.dataset.name!r} both benchmark "
                                  f"{s} for experiment {c.experiment!r}; give one of them another name and "
                                  "experiment 'other'")
            seen[(c.experiment, s)] = c.dataset.name
    return cases


def user_cases(paths: list[str], period: str = "*") -> list[Case]:
    """Datasets from YAML files (or built-in names); ``{period}`` in their file patterns
    becomes ``period`` (``*``: every period)."""
    configs = []
    for p in paths:
        cfg = load_dataset_config(p)
        if any("{period}" in f for s in cfg.sources for f in s.files):
            cfg = cfg.with_period(period)
        configs.append((cfg, str(p) if period == "*" else f"{p} (period {period})"))
    return cases_from_configs(configs)


def _source_digest() -> str:
    """Hash of the simulators' sources: simulated files are reused only by the same code."""
    import autopid.physics.alice
    import autopid.physics.ams
    import autopid.simulate._common
    import autopid.simulate.alice
    import autopid.simulate.ams

    h = hashlib.sha256()
    for mod in (autopid.simulate._common, autopid.simulate.alice, autopid.simulate.ams,
                autopid.physics.alice, autopid.physics.ams):
        h.update(Path(str(mod.__file__)).read_bytes())
    return h.hexdigest()[:16]


def simulate_builtin(data_root: Path, preset: Preset) -> dict[str, float]:
    """Simulate the built-in periods under ``data_root`` unless the same simulation is
    there already; returns the seconds spent per experiment (0 when reused)."""
    import time

    from autopid.simulate import (
        ALICE,
        AMS,
        AliceSimConfig,
        AmsSimConfig,
        simulate_period,
    )

    digest = _source_digest()
    spent: dict[str, float] = {}
    for name, exp, cfg_type, (runs, events), period in (
        ("alice", ALICE, AliceSimConfig, preset.alice_sim, "LHC26a"),
        ("ams", AMS, AmsSimConfig, preset.ams_sim, "P2026a"),
    ):
        root = data_root / name
        marker = root / ".benchmark-simulation.json"
        want = {"runs": runs, "events_per_run": events, "seed": preset.sim_seed, "period": period,
                "simulator": digest}
        if marker.is_file() and json.loads(marker.read_text()) == want and (root / period / "period.json").is_file():
            _log.info("reusing the simulated %s period in %s", name, root)
            spent[name] = 0.0
            continue
        t0 = time.perf_counter()
        marker.unlink(missing_ok=True)
        simulate_period(exp, cfg_type(), root, period, runs=runs, events_per_run=events, seed=preset.sim_seed)
        marker.write_text(json.dumps(want))
        spent[name] = time.perf_counter() - t0
        _log.info("simulated %s: %d runs x %d events per domain in %.1f s", name, runs, events, spent[name])
    return spent
