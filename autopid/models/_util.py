"""Names resolved from strings in one place, and the small MLP every branch uses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """``channels[0] -> ... -> channels[-1]``; activation and dropout between layers, none after the last.

    Args:
        channels: layer widths, input first (e.g. ``[32, 64, 1]``).
        act: activation name (default: ``"relu"``).
        dropout: dropout after each hidden activation (default: ``0.0``).
    """

    def __init__(self, channels: Sequence[int], act: str = "relu", dropout: float = 0.0) -> None:
        if len(channels) < 2:
            raise ValueError("an MLP needs at least an input and an output width")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(channels) - 2:
                layers.append(activation(act))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
