r"""Offline metrics of probability predictions: AUC, log loss, expected calibration error.

The expected calibration error uses bins of equal count (quantiles of the prediction),
which keeps every bin populated when most probabilities are small:

.. math::

    \mathrm{ECE} = \sum_b \frac{n_b}{n} \left| \bar y_b - \bar p_b \right|

>>> round(ece([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 1], bins=2), 3)
0.1
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

EPS = 1e-7


def _arrays(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray):
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        message = f"p and y must be 1-D of equal length; got {p.shape} and {y.shape}"
        raise ValueError(message)
    return p, y


def auc(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    """Return the ROC AUC (NaN when only one class is present)."""
    p, y = _arrays(p, y)
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, p))


def logloss(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    """Return the mean log loss, with predictions clipped to ``[1e-7, 1 - 1e-7]``."""
    p, y = _arrays(p, y)
    if len(p) == 0:
        return math.nan
    return float(log_loss(y, np.clip(p, EPS, 1 - EPS), labels=[0, 1]))


def calibration_bins(
    p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """Return ``(mean prediction, observed rate, count)`` per equal-count bin."""
    p, y = _arrays(p, y)
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, len(p))):
        if len(part):
            out.append((float(p[part].mean()), float(y[part].mean()), len(part)))
    return out


def ece(
    p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray, bins: int = 10
) -> float:
    """Return the expected calibration error over ``bins`` equal-count bins."""
    table = calibration_bins(p, y, bins)
    n = sum(count for _, _, count in table)
    if n == 0:
        return math.nan
    return float(sum(count / n * abs(rate - mean) for mean, rate, count in table))


def summary(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Return ``{auc, logloss, ece, n, positives, base_rate, mean_prediction}``."""
    p, y = _arrays(p, y)
    return {
        "auc": auc(p, y),
        "logloss": logloss(p, y),
        "ece": ece(p, y),
        "n": len(y),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()) if len(y) else math.nan,
        "mean_prediction": float(p.mean()) if len(p) else math.nan,
    }
