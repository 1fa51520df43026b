r"""Probability calibration fitted on a held-out time slice, stored as plain JSON.

Platt scaling maps a raw probability :math:`p` through a logistic curve on its log-odds,
:math:`\hat p = \sigma(a \cdot \mathrm{logit}(p) + b)`; it is strictly increasing, so it
keeps the model's ranking (and no ties appear among candidates). Isotonic regression is
a step function through the points; it is more flexible but needs more positives.

>>> cal = Calibrator.fit([0.1, 0.2, 0.3, 0.4] * 50, [0, 0, 1, 1] * 50, method="platt")
>>> bool(0.0 < cal.apply([0.25])[0] < 1.0)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

Method = Literal["platt", "isotonic", "none"]
_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    """Return the log-odds of probabilities (clipped away from 0 and 1)."""
    # minimum(maximum()) is clip without np.clip's Python-level dispatch (a hot path).
    p = np.minimum(np.maximum(np.asarray(p, dtype=np.float64), _EPS), 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map: Platt ``(a, b)`` or isotonic knots ``(x, y)``."""

    method: Method
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    @classmethod
    def fit(
        cls, p: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, method: Method
    ) -> Calibrator:
        """Fit the map from raw probabilities ``p`` to observed ``labels``."""
        p = np.asarray(p, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if method not in ("platt", "isotonic", "none"):
            message = f"method must be 'platt', 'isotonic' or 'none'; got {method!r}"
            raise ValueError(message)
        if method == "none" or len(np.unique(labels)) < 2:
            return cls("none")
        if method == "platt":
            # A large C: calibration should follow the data, not shrink towards 1/2.
            fit = LogisticRegression(C=1e6, max_iter=1000).fit(logit(p)[:, None], labels)
            return cls("platt", a=float(fit.coef_[0, 0]), b=float(fit.intercept_[0]))
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, labels)
        return cls(
            "isotonic",
            x=tuple(float(v) for v in iso.X_thresholds_),
            y=tuple(float(v) for v in iso.y_thresholds_),
        )

    def apply(self, p: Sequence[float] | np.ndarray) -> np.ndarray:
        """Return calibrated probabilities."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * logit(p) + self.b)))
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return p

    def to_json(self) -> dict[str, Any]:
        """Return the map as plain values."""
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x),
                "y": list(self.y)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        """Rebuild a map written by :meth:`to_json`."""
        return cls(data["method"], data["a"], data["b"], tuple(data["x"]), tuple(data["y"]))
