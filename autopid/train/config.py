"""The training configuration: one model, one species, one run directory."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from autopid.config._loader import StrictModel


class ModelSpec(StrictModel):
    family: Literal["fse", "mda"]
    params: dict[str, Any] = Field(default_factory=dict, description="constructor arguments of the model")


class TrainingSpec(StrictModel):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    lr_decay: float = Field(default=0.98, gt=0, le=1, description="exponential decay per epoch")
    weight_decay: float = Field(default=0.0, ge=0)
    lambda_max: float = Field(default=0.0, ge=0, description="DANN strength; 0 switches adaptation off")
    label_shift_weighting: bool | None = Field(
        default=None,
        description="weight the domain loss of MC events by the Data/MC class ratios, the Data class mix "
        "estimated without truth from the model's score at the end of the warm-up (MLLS, arXiv:2003.04475); "
        "None: on when adapting (lambda_max > 0)",
    )
    species_matching: bool | None = Field(
        default=None,
        description="MDA (AMS): weight the MC rows of the domain loss and of the class-matched domain accuracy "
        "to the Data composition by nuclear charge, estimated without truth by a template fit of the L1 charge "
        "(autopid.calibration.species_mix); it replaces the signal/background label-shift weights. None: on "
        "when adapting and the dataset maps an l1_charge role")
    charge_calibration: bool = Field(
        default=True,
        description="MDA: fit the tracker charge gain map of each domain on its train split (truth-free, "
        "per layer, side and x bin) and calibrate the charge inputs with it in training, evaluation and "
        "inference (stored with the model); no effect on FSE")
    rigidity_reweighting: Literal["none", "domain", "all"] | None = Field(
        default="domain",
        description="MDA: weight MC rows by the Data/MC density ratio in log10|R| (train splits): in the "
        "domain loss ('domain'), in the domain and classification losses ('all') or not at all ('none'); "
        "the class-matched domain accuracy uses the weights unless 'none'; None: the default, 'domain'")
    adaptation_warmup_epochs: int = Field(
        default=1, ge=0,
        description="epochs trained source-only (DANN lambda 0) before the adaptation schedule starts; the "
        "Data class mix is estimated from the model at the end of the warm-up and kept (at most epochs - 1)")
    label_shift_method: Literal["mlls", "bbse"] = Field(
        default="mlls", description="truth-free estimator of the Data signal fraction (class-matched "
        "domain accuracy, label-shift weights): maximum-likelihood label shift or black-box shift estimation")
    signal_fraction: float | None = Field(default=None, gt=0, lt=1, description="None: natural composition")
    background_mix: dict[str, float] | None = None
    max_train_rows: int | None = Field(default=None, ge=1)
    max_eval_rows: int | None = Field(default=None, ge=1)
    early_stopping_patience: int | None = Field(default=5, ge=1)
    seed: int = 0
    threads: int | None = Field(default=None, ge=1, description="torch threads per worker (default: the worker's CPUs)")
    mixed_precision: bool = Field(
        default=False, description="bfloat16 autocast on CUDA (no effect on CPU); measured slower for the "
        "default FSE sizes and 1.15x faster for MDA on an H100 (benchmarks/gpu_training.py)")


class ScalingSpec(StrictModel):
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, gt=0, le=1,
                                   description="a fraction lets several small trials share one GPU")


class TrainConfig(StrictModel):
    dataset: str = Field(description="dataset YAML path or built-in name (alice, ams)")
    species: str = Field(description="the signal species (one-vs-all)")
    period: str = Field(default="*", description="run period ({period} in the dataset's file patterns)")
    model: ModelSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _domain_head(self) -> TrainConfig:
        if self.training.label_shift_weighting is True and self.training.lambda_max == 0:
            raise ValueError("training.label_shift_weighting needs training.lambda_max > 0")
        if self.training.species_matching is True and self.training.lambda_max == 0:
            raise ValueError("training.species_matching needs training.lambda_max > 0")
        return self
