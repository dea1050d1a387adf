"""Gradient reversal for domain-adversarial training (DANN, arXiv:1505.07818).

Forward: identity. Backward: the gradient times ``-lambda``. A domain classifier behind
it learns to tell MC from Data, while the features in front of it learn not to let it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Identity forward; ``-lambda_ * grad`` backward."""
    return _Reverse.apply(x, float(lambda_))


def dann_lambda(progress: float, lambda_max: float = 1.0, gamma: float = 10.0) -> float:
    """The DANN schedule ``lambda_max * (2 / (1 + exp(-gamma p)) - 1)``, ``p`` in [0, 1].

    It starts at 0, so the domain classifier can learn before the features are pushed,
    and rises to ``lambda_max``. ``lambda_max = 0`` switches adaptation off.
    """
    p = min(max(progress, 0.0), 1.0)
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainHead(nn.Module):
    """A Data-vs-MC classifier behind a gradient-reversal layer.

    Args:
        in_channels: width of the shared feature vector.
        hidden_channels: hidden width (default: ``64``).
        dropout: dropout after the hidden layer (default: ``0.1``).

    Shapes:
        input ``[B, in_channels]`` and a scalar lambda; output logits ``[B]``.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_channels, 1),
        )

    def forward(self, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        return self.net(grad_reverse(features, lambda_)).squeeze(-1)
