"""Check model parameters before any worker starts: a typo or an impossible value (a head
count that does not divide the width) is refused with the parameter's name on the driver,
not found by every Ray Train worker in turn."""

from __future__ import annotations

from typing import Any

from autopid.errors import ConfigError


def check_model_params(family: str, params: dict[str, Any], *, where: str) -> None:
    """Build the model on stand-in input sizes (the data's sizes do not decide whether
    these parameters are valid) and raise :class:`ConfigError` naming ``where`` if it fails."""
    try:
        if family == "fse":
            from autopid.models.fse import FSEAttention

            FSEAttention(num_features=4, **params)
        elif family == "mda":
            from autopid.models.mda import MDA

            MDA(rigidity_channels=4, tof_channels=4, **params)
    except Exception as exc:  # noqa: BLE001 - whatever the constructor refuses, named with the parameters
        raise ConfigError(f"{where}: model.params {params} do not make a {family} model: "
                          f"{type(exc).__name__}: {exc}") from None
