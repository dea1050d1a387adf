"""Learned baselines: gradient-boosted trees (NaN native) and an MLP with mean imputation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from autopid.features import Normaliser
from autopid.models._util import MLP


class XGBoostBaseline:
    """Gradient-boosted trees on the raw columns; missing values stay NaN (XGBoost's
    default direction), as ALICE analysers use them through hipe4ml.

    Args:
        columns: input columns.
        n_estimators, max_depth, learning_rate: (default: ``300``, ``6``, ``0.1``).
        seed: (default: ``0``).
    """

    def __init__(self, columns: Sequence[str], n_estimators: int = 300, max_depth: int = 6,
                 learning_rate: float = 0.1, seed: int = 0, threads: int | None = None) -> None:
        from xgboost import XGBClassifier

        self.columns = list(columns)
        self.model = XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                   tree_method="hist", random_state=seed, n_jobs=threads,
                                   eval_metric="logloss")
        self.threshold = 0.5

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> XGBoostBaseline:
        self.model.fit(frame[self.columns].to_numpy(np.float32), np.asarray(y).astype(int))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(frame[self.columns].to_numpy(np.float32))[:, 1]


class MLPImputation:
    """An MLP on normalised features with missing values replaced by the training mean
    (0 after standardisation): the imputation the FSE model avoids.

    Args:
        normaliser: the cache's normalisation (fitted on the training split).
        columns: input columns.
        hidden: hidden widths (default: ``(128, 64)``).
        epochs, batch_size, lr: (default: ``10``, ``256``, ``1e-3``).
        seed: (default: ``0``).
    """

    def __init__(self, normaliser: Normaliser, columns: Sequence[str], hidden: Sequence[int] = (128, 64),
                 epochs: int = 10, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> None:
        self.normaliser = normaliser
        self.columns = list(columns)
        torch.manual_seed(seed)
        self.net = MLP([len(self.columns), *hidden, 1], dropout=0.1)
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.threshold = 0.5

    def _x(self, frame: pd.DataFrame) -> torch.Tensor:
        return torch.from_numpy(np.nan_to_num(self.normaliser.transform(frame, self.columns), nan=0.0))

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> MLPImputation:
        x, t = self._x(frame), torch.as_tensor(np.asarray(y), dtype=torch.float32)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                opt.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(self.net(x[idx]).squeeze(-1), t[idx])
                loss.backward()
                opt.step()
        return self

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        self.net.eval()
        return torch.sigmoid(self.net(self._x(frame)).squeeze(-1)).numpy()
