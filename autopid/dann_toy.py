"""The DANN paper's toy (arXiv:1505.07818, section 5.1), run with autopid's own
gradient-reversal code: two moons, 150 source and 150 target points, noise 0.05, the
target rotated by 35 degrees. A check that adaptation does what the paper says."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autopid.models._util import MLP
from autopid.models.grl import DomainHead, dann_lambda


@dataclass(frozen=True)
class ToyResult:
    source_accuracy: float
    target_accuracy: float


def two_moons(n: int = 150, noise: float = 0.05, angle_deg: float = 35.0, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    xs, ys = make_moons(n, noise=noise, random_state=seed)
    xt, yt = make_moons(n, noise=noise, random_state=seed + 1)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = xt.mean(axis=0)
    xt = (xt - centre) @ rot.T + centre
    return xs.astype(np.float32), ys.astype(np.float32), xt.astype(np.float32), yt.astype(np.float32)


def run_two_moons(lambda_max: float, *, steps: int = 3000, hidden: int = 15, lr: float = 5e-3,
                  seed: int = 0) -> ToyResult:
    """Train on labelled source and unlabelled target; ``lambda_max = 0`` is source-only."""
    xs, ys, xt, yt = (torch.from_numpy(a) for a in two_moons(seed=seed))
    torch.manual_seed(seed)
    features = MLP([2, hidden, hidden], act="relu")
    feat = nn.Sequential(features, nn.ReLU())
    label = nn.Linear(hidden, 1)
    domain = DomainHead(hidden, hidden, dropout=0.0)
    params = [*feat.parameters(), *label.parameters(), *domain.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    bce = nn.functional.binary_cross_entropy_with_logits
    x_all = torch.cat([xs, xt])
    d_all = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))])
    for step in range(steps):
        lam = dann_lambda(step / steps, lambda_max)
        h = feat(x_all)
        loss = bce(label(h[: len(xs)]).squeeze(-1), ys)
        if lambda_max > 0:
            loss = loss + bce(domain(h, lam), d_all)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc_s = ((label(feat(xs)).squeeze(-1) > 0).float() == ys).float().mean().item()
        acc_t = ((label(feat(xt)).squeeze(-1) > 0).float() == yt).float().mean().item()
    return ToyResult(acc_s, acc_t)
