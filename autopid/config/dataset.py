"""The dataset description: which ROOT files, trees and branches play which role.

It works for ROOT files autopid did not write, as long as the mapping names their
branches. Cuts are structured (branch, op, value): nothing from a config is evaluated.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from autopid.config._loader import StrictModel, load_yaml_config
from autopid.errors import ConfigError

CutOp = Literal["<", "<=", ">", ">=", "==", "!=", "between", "in", "abs<"]
Transform = Literal["signed_log", "inverse"]

# What a branch means to the classic selections, the calibrations and the estimates.
# The YAML maps each role it can serve to a branch (a feature or an auxiliary branch),
# so code never reads a branch by an experiment's own name.
ROLES: dict[str, str] = {
    # ALICE-like tracks
    "momentum": "total momentum p (GeV/c)",
    "pt": "transverse momentum (GeV/c)",
    "charge_sign": "charge sign (+1/-1)",
    "tpc_signal": "TPC dE/dx (any scale: the baselines fit it)",
    "tpc_clusters": "TPC clusters used for the dE/dx",
    "tof_beta": "TOF velocity beta (missing without a TOF hit)",
    "tof_time": "TOF time of flight (any unit: the baselines fit the scale)",
    "track_length": "track length to the TOF (any unit)",
    # AMS-like nuclei
    "rigidity": "inner-tracker rigidity (GV)",
    "l1_charge": "tracker layer-1 charge (charge units)",
    "inner_charge": "inner-tracker (L2-L8) charge",
    "utof_charge": "upper-TOF charge",
    "l1_ladder": "ladder of the main-track L1 hit (-1 or missing: none)",
    "second_tracks": "number of reconstructed second tracks",
    "extra_clusters": "clusters in L2-L4 not on the main track",
}


class Source(StrictModel):
    domain: Literal["mc", "data"] = Field(description="MC (labelled, source) or Data (target)")
    files: list[str] = Field(min_length=1, description="paths or globs; relative to the working directory")
    tree: str = Field(description="TTree or RNTuple name inside each file")


class Cut(StrictModel):
    """One selection cut: keep entries where ``branch op value`` holds."""

    branch: str
    op: CutOp
    value: float | list[float]

    @model_validator(mode="after")
    def _check_value(self) -> Cut:
        if self.op == "between":
            if not isinstance(self.value, list) or len(self.value) != 2:
                raise ValueError("'between' needs value: [low, high]")
            if self.value[0] > self.value[1]:
                raise ValueError(f"'between' needs low <= high, got {self.value}")
        elif self.op == "in":
            if not isinstance(self.value, list) or not self.value:
                raise ValueError("'in' needs a non-empty list of values")
        elif isinstance(self.value, list):
            raise ValueError(f"'{self.op}' needs a single number")
        return self

    def describe(self) -> str:
        return f"{self.branch} {self.op} {self.value}"


class MissingRule(StrictModel):
    """Treat ``columns`` as missing wherever ``when`` holds.

    One definition serves preprocessing and inference (the exported model applies the
    same rule), e.g. TOF is used only for p >= 0.5 GeV/c.
    """

    columns: list[str] = Field(min_length=1)
    when: Cut


class TruthBranch(StrictModel):
    mc: str = Field(description="MC truth branch (training reads it)")
    data: str | None = Field(
        default=None,
        description="simulated-Data truth branch: evaluation only, never read by training",
    )


class Truth(StrictModel):
    label: TruthBranch = Field(description="the branch whose values define the species")
    extra: dict[str, TruthBranch] = Field(default_factory=dict, description="kept for evaluation")


class Species(StrictModel):
    truth: list[int] = Field(min_length=1, description="truth values (PDG code, Z) of this species")


class Split(StrictModel):
    train: float = Field(default=0.7, gt=0, lt=1)
    validation: float = Field(default=0.15, gt=0, lt=1)
    test: float = Field(default=0.15, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class ArrayRole(StrictModel):
    branch: str
    layers: list[int] = Field(min_length=1, description="1-based layer numbers to use")


class MdaLayout(StrictModel):
    """How the AMS-like branches map onto the MDA inputs."""

    charge: ArrayRole = Field(description="(track, layer, side) charges")
    position: ArrayRole = Field(description="(track, layer, side) hit positions")
    clusters: ArrayRole = Field(description="(layer, side) cluster counts: the CNN image")
    rigidity: list[str] = Field(min_length=1)
    tof: list[str] = Field(min_length=1)
    layer_z: list[float] | None = Field(default=None, description="layer z positions (cm), node feature")


class DatasetConfig(StrictModel):
    name: str
    experiment: Literal["alice", "ams", "other"] = "other"
    family: Literal["fse", "mda"] = Field(description="the model family the cache is laid out for")
    sources: list[Source] = Field(min_length=1)
    run_branch: str = "run"
    event_branch: str = "event"
    features: list[str] = Field(min_length=1, description="branches (scalars or fixed-size arrays) stored as features")
    auxiliary: list[str] = Field(
        default_factory=list,
        description="scalar branches stored next to the features, never model inputs nor normalised "
                    "(for the classic baselines, calibrations and estimates); sentinels become NaN")
    roles: dict[str, str] = Field(
        default_factory=dict,
        description=f"role -> branch (a feature or an auxiliary branch); roles: {', '.join(ROLES)}")
    required: list[str] = Field(default_factory=list, description="features that must never be missing, NaN or inf")
    sentinels: list[float] = Field(default_factory=list, description="values that mean 'missing'")
    missing_rules: list[MissingRule] = Field(default_factory=list)
    transforms: dict[str, Transform] = Field(default_factory=dict, description="applied before normalisation")
    selection: list[Cut] = Field(default_factory=list)
    truth: Truth
    species: dict[str, Species] = Field(min_length=1)
    targets: list[str] = Field(default_factory=list, description="species that get a model (one-vs-all)")
    kinematic: str | None = Field(default=None, description="feature used for binned metrics (p, rigidity)")
    split: Split = Field(default_factory=Split)
    normalisation_domains: list[Literal["mc", "data"]] = Field(default_factory=lambda: ["mc"])
    chunk_size: int = Field(default=200_000, gt=0, description="entries read at a time (one Dask task per file)")
    mda: MdaLayout | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        features = set(self.features)
        for key, names in (("required", self.required), ("transforms", list(self.transforms))):
            for name in names:
                if name not in features:
                    raise ValueError(f"{key}: {name!r} is not in features")
        for i, rule in enumerate(self.missing_rules):
            for col in rule.columns:
                if col not in features:
                    raise ValueError(f"missing_rules[{i}].columns: {col!r} is not in features")
        for name in self.targets:
            if name not in self.species:
                raise ValueError(f"targets: unknown species {name!r}; defined: {sorted(self.species)}")
        if self.kinematic is not None and self.kinematic not in features:
            raise ValueError(f"kinematic: {self.kinematic!r} is not in features")
        self._check_roles(features)
        if self.family == "mda":
            if self.mda is None:
                raise ValueError("family 'mda' needs an 'mda' section")
            m = self.mda
            for role in (m.charge.branch, m.position.branch, m.clusters.branch, *m.rigidity, *m.tof):
                if role not in features:
                    raise ValueError(f"mda: {role!r} is not in features")
        seen: dict[int, str] = {}
        for name, sp in self.species.items():
            for code in sp.truth:
                if code in seen:
                    raise ValueError(f"species: truth value {code} is in both {seen[code]!r} and {name!r}")
                seen[code] = name
        return self

    def _check_roles(self, features: set[str]) -> None:
        for name in self.auxiliary:
            if name in features:
                raise ValueError(f"auxiliary: {name!r} is also a feature; list it in one place only")
        if len(set(self.auxiliary)) != len(self.auxiliary):
            raise ValueError("auxiliary: a branch is listed twice")
        stored = features | set(self.auxiliary)
        for role, branch in self.roles.items():
            if role not in ROLES:
                raise ValueError(f"roles: unknown role {role!r}; known roles: {', '.join(ROLES)}")
            if branch not in stored:
                raise ValueError(f"roles: role {role!r} maps to branch {branch!r}, which is neither in "
                                 "features nor in auxiliary")

    def with_period(self, period: str) -> DatasetConfig:
        """The dataset restricted to one run period: ``{period}`` in file patterns is
        replaced (``*``, the default, means every period)."""
        if period != "*" and not any("{period}" in f for s in self.sources for f in s.files):
            raise ConfigError(f"dataset {self.name!r}: file patterns have no {{period}} placeholder, "
                              f"so period {period!r} cannot be selected")
        sources = [s.model_copy(update={"files": [f.replace("{period}", period) for f in s.files]})
                   for s in self.sources]
        return self.model_copy(update={"sources": sources})

    def species_of(self, name: str) -> Species:
        """The species called ``name``; an unknown name lists the defined ones."""
        if name not in self.species:
            raise ConfigError(
                f"dataset {self.name!r}: unknown species {name!r}; defined: {', '.join(sorted(self.species))}"
            )
        return self.species[name]


BUILTIN_DATASETS = ("alice", "ams")


def builtin_dataset_path(name: str) -> Path:
    return Path(str(resources.files("autopid") / "defaults" / "datasets" / f"{name}.yaml"))


def load_dataset_config(path_or_name: str | Path) -> DatasetConfig:
    """Load a dataset YAML, or a built-in one by name (``alice``, ``ams``)."""
    if str(path_or_name) in BUILTIN_DATASETS and not Path(path_or_name).exists():
        path_or_name = builtin_dataset_path(str(path_or_name))
    return load_yaml_config(path_or_name, DatasetConfig)
