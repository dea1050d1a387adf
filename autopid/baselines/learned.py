"""Learned baselines: gradient-boosted trees (NaN native) and an MLP with mean imputation.

Both read feature columns (raw for XGBoost, normalised for the MLP). Given a validation
sample they stop where it says (XGBoost: early stopping on its log-loss; the MLP: the
epoch with the lowest validation loss) and put ``threshold`` at its best F1; the tuning of
their hyperparameters is ``tuning.tune_baseline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from autopid.baselines._common import Validation
from autopid.features import Normaliser
from autopid.metrics import best_f1_threshold
from autopid.models._util import MLP


class XGBoostBaseline:
    """Gradient-boosted trees on the raw columns; missing values stay NaN (XGBoost's
    default direction), as ALICE analysers use them through hipe4ml.

    Args:
        columns: input columns.
        n_estimators, max_depth, learning_rate: (default: ``300``, ``6``, ``0.1``).
        subsample, colsample_bytree, min_child_weight, reg_lambda: (default: ``1``, ``1``,
            ``1``, ``1``; XGBoost's own).
        early_stopping_rounds: with a validation sample (default: ``20``).
        seed: (default: ``0``).
        threads: (default: XGBoost's).
    """

    def __init__(self, columns: Sequence[str], n_estimators: int = 300, max_depth: int = 6,
                 learning_rate: float = 0.1, seed: int = 0, threads: int | None = None, *,
                 subsample: float = 1.0, colsample_bytree: float = 1.0, min_child_weight: float = 1.0,
                 reg_lambda: float = 1.0, early_stopping_rounds: int = 20) -> None:
        self.columns = list(columns)
        self.params: dict[str, Any] = {"n_estimators": n_estimators, "max_depth": max_depth,
                                       "learning_rate": learning_rate, "subsample": subsample,
                                       "colsample_bytree": colsample_bytree, "min_child_weight": min_child_weight,
                                       "reg_lambda": reg_lambda}
        self.seed, self.threads, self.early_stopping_rounds = seed, threads, early_stopping_rounds
        self.model: Any = None
        self.threshold = 0.5

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.columns].to_numpy(np.float32)

    def fit(self, frame: pd.DataFrame, y: np.ndarray, *, validation: Validation | None = None) -> XGBoostBaseline:
        from xgboost import XGBClassifier

        stop = self.early_stopping_rounds if validation is not None else None
        self.model = XGBClassifier(**self.params, tree_method="hist", random_state=self.seed, n_jobs=self.threads,
                                   eval_metric="logloss", early_stopping_rounds=stop)
        if validation is None:
            self.model.fit(self._x(frame), np.asarray(y).astype(int))
            return self
        vf, vy = validation
        self.model.fit(self._x(frame), np.asarray(y).astype(int), eval_set=[(self._x(vf), np.asarray(vy).astype(int))],
                       verbose=False)
        self.threshold = best_f1_threshold(vy, self.predict(vf))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._x(frame))[:, 1]


class MLPImputation:
    """An MLP on normalised features with missing values replaced by the training mean
    (0 after standardisation): the imputation the FSE model avoids.

    Args:
        normaliser: the cache's normalisation (fitted on the training split).
        columns: input columns.
        hidden: hidden widths (default: ``(128, 64)``).
        epochs, batch_size, lr: (default: ``10``, ``256``, ``1e-3``).
        dropout, weight_decay: (default: ``0.1``, ``0``).
        seed: (default: ``0``).
    """

    def __init__(self, normaliser: Normaliser, columns: Sequence[str], hidden: Sequence[int] = (128, 64),
                 epochs: int = 10, batch_size: int = 256, lr: float = 1e-3, seed: int = 0, *,
                 dropout: float = 0.1, weight_decay: float = 0.0) -> None:
        self.normaliser = normaliser
        self.columns = list(columns)
        torch.manual_seed(seed)
        self.net = MLP([len(self.columns), *hidden, 1], dropout=dropout)
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.weight_decay = weight_decay
        self.threshold = 0.5
        self.best_epoch = epochs

    def _x(self, frame: pd.DataFrame) -> torch.Tensor:
        return torch.from_numpy(np.nan_to_num(self.normaliser.transform(frame, self.columns), nan=0.0))

    @torch.no_grad()
    def _loss(self, x: torch.Tensor, t: torch.Tensor) -> float:
        self.net.eval()
        return float(nn.functional.binary_cross_entropy_with_logits(self.net(x).squeeze(-1), t))

    def fit(self, frame: pd.DataFrame, y: np.ndarray, *, validation: Validation | None = None) -> MLPImputation:
        # copies: a pandas column may be read-only, which torch does not accept
        x, t = self._x(frame), torch.from_numpy(np.array(y, dtype=np.float32))
        val = None
        if validation is not None:
            val = (self._x(validation[0]), torch.from_numpy(np.array(validation[1], dtype=np.float32)))
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        best: tuple[float, dict[str, torch.Tensor]] | None = None
        for epoch in range(self.epochs):
            self.net.train()
            for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                opt.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(self.net(x[idx]).squeeze(-1), t[idx])
                loss.backward()
                opt.step()
            if val is not None:
                v = self._loss(*val)
                if best is None or v < best[0]:
                    best = (v, {k: w.clone() for k, w in self.net.state_dict().items()})
                    self.best_epoch = epoch + 1
        if best is not None:
            self.net.load_state_dict(best[1])
            self.validation_loss = best[0]
            self.threshold = best_f1_threshold(validation[1], self.predict(validation[0]))  # type: ignore[index]
        return self

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        self.net.eval()
        return torch.sigmoid(self.net(self._x(frame)).squeeze(-1)).numpy()
