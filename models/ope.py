r"""Off-policy estimators of a new policy's value from logged decisions, with bootstrap intervals.

Notation (as in Open Bandit Pipeline): logged rounds :math:`i = 1..n` with context
:math:`x_i`, logged action :math:`a_i`, reward :math:`r_i` and logging propensity
:math:`p_i = \pi_0(a_i \mid x_i)`; the evaluated policy gives :math:`\pi_e(a_i \mid x_i)`
to the logged action, so the importance weight is :math:`w_i = \pi_e(a_i|x_i) / p_i`.

Every estimator takes plain arrays, checks them at the edge (messages name the argument)
and returns a float; :meth:`~BaseEstimator.interval` adds a percentile bootstrap interval.

>>> import numpy as np
>>> ips = InverseProbabilityWeighting()
>>> ips.estimate(reward=np.array([1.0, 0.0]), pscore=np.array([0.5, 0.5]),
...              action_prob=np.array([1.0, 0.0]))
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float

    def contains(self, value: float) -> bool:
        """Return whether ``value`` lies inside the interval."""
        return self.ci_low <= value <= self.ci_high

    def as_dict(self) -> dict[str, float]:
        """Return ``{value, ci_low, ci_high}``."""
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def _vector(name: str, value: object, n: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        message = f"`{name}` must be a 1-D array; got shape {array.shape}"
        raise ValueError(message)
    if n is not None and len(array) != n:
        message = f"`{name}` must have the same length as `reward` ({n}); got {len(array)}"
        raise ValueError(message)
    if not np.all(np.isfinite(array)):
        message = f"`{name}` must be finite; got NaN or infinity"
        raise ValueError(message)
    return array


def check_inputs(
    reward: object,
    pscore: object,
    action_prob: object,
    *,
    estimated_reward_logged: object | None = None,
    estimated_value: object | None = None,
) -> dict[str, np.ndarray]:
    """Validate estimator inputs; raise ``ValueError`` naming the first bad argument."""
    r = _vector("reward", reward)
    if len(r) == 0:
        message = "`reward` must not be empty"
        raise ValueError(message)
    n = len(r)
    p = _vector("pscore", pscore, n)
    if np.any(p <= 0) or np.any(p > 1):
        message = "`pscore` must be within (0, 1]: every logged action needs a positive propensity"
        raise ValueError(message)
    pi = _vector("action_prob", action_prob, n)
    if np.any(pi < 0) or np.any(pi > 1):
        message = "`action_prob` must be within [0, 1]"
        raise ValueError(message)
    out = {"reward": r, "pscore": p, "action_prob": pi}
    if estimated_reward_logged is not None:
        out["estimated_reward_logged"] = _vector(
            "estimated_reward_logged", estimated_reward_logged, n
        )
    if estimated_value is not None:
        out["estimated_value"] = _vector("estimated_value", estimated_value, n)
    return out


class BaseEstimator:
    """Shared interval logic: the percentile bootstrap over logged rounds."""

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False

    def _estimate(self, v: dict[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def _check(
        self,
        reward: object,
        pscore: object,
        action_prob: object,
        estimated_reward_logged: object | None,
        estimated_value: object | None,
    ) -> dict[str, np.ndarray]:
        v = check_inputs(
            reward,
            pscore,
            action_prob,
            estimated_reward_logged=estimated_reward_logged,
            estimated_value=estimated_value,
        )
        if self.needs_model:
            for name in ("estimated_reward_logged", "estimated_value"):
                if name not in v:
                    message = f"`{name}` is required by {type(self).__name__}"
                    raise ValueError(message)
        return v

    def estimate(
        self,
        reward: object,
        pscore: object,
        action_prob: object,
        estimated_reward_logged: object | None = None,
        estimated_value: object | None = None,
    ) -> float:
        """Return the estimated policy value."""
        v = self._check(reward, pscore, action_prob, estimated_reward_logged, estimated_value)
        return float(self._estimate(v)[0])

    def interval(
        self,
        reward: object,
        pscore: object,
        action_prob: object,
        estimated_reward_logged: object | None = None,
        estimated_value: object | None = None,
        *,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int = 0,
    ) -> Interval:
        """Return the estimate with a percentile bootstrap ``1 - alpha`` interval.

        Rounds are resampled with replacement ``n_bootstrap`` times (seeded).
        """
        if n_bootstrap < 10:
            message = f"`n_bootstrap` must be >= 10; got {n_bootstrap}"
            raise ValueError(message)
        if not 0 < alpha < 1:
            message = f"`alpha` must be within (0, 1); got {alpha}"
            raise ValueError(message)
        v = self._check(reward, pscore, action_prob, estimated_reward_logged, estimated_value)
        n = len(v["reward"])
        rng = np.random.default_rng(seed)
        values = []
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_bootstrap, chunk):
            rows = rng.integers(0, n, size=(min(chunk, n_bootstrap - start), n))
            values.append(self._estimate(v, rows))
        samples = np.concatenate(values)
        low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
        return Interval(float(self._estimate(v)[0]), float(low), float(high))


def _take(v: dict[str, np.ndarray], name: str, rows: np.ndarray | None) -> np.ndarray:
    array = v[name]
    return array[None, :] if rows is None else array[rows]


class InverseProbabilityWeighting(BaseEstimator):
    r"""Inverse probability weighting (IPS).

    .. math:: \hat V_{IPS} = \frac{1}{n} \sum_i w_i r_i

    Unbiased when the logging propensities are right and positive wherever
    :math:`\pi_e` acts; its variance grows with the weights (rare logged actions).
    Reference: Horvitz & Thompson (1952); Precup et al. (2000).
    """

    name = "ips"

    def _estimate(self, v: dict[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        w = _take(v, "action_prob", rows) / _take(v, "pscore", rows)
        return (w * _take(v, "reward", rows)).mean(axis=1)


class SelfNormalizedInverseProbabilityWeighting(BaseEstimator):
    r"""Self-normalized inverse probability weighting (SNIPS).

    .. math:: \hat V_{SNIPS} = \frac{\sum_i w_i r_i}{\sum_i w_i}

    Slightly biased but consistent, with far less variance than IPS when weights are
    large; scale-free in the weights. Reference: Swaminathan & Joachims (2015).
    """

    name = "snips"

    def _estimate(self, v: dict[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        w = _take(v, "action_prob", rows) / _take(v, "pscore", rows)
        total = w.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        return np.where(total > 0, (w * _take(v, "reward", rows)).sum(axis=1) / safe, 0.0)


class DoublyRobust(BaseEstimator):
    r"""Doubly robust (DR): a reward model's estimate, corrected by weighted residuals.

    .. math::

        \hat V_{DR} = \frac{1}{n} \sum_i \Bigl( \hat q(x_i, \pi_e)
            + w_i \bigl(r_i - \hat q(x_i, a_i)\bigr) \Bigr),
        \qquad \hat q(x, \pi_e) = \sum_a \pi_e(a|x)\, \hat q(x, a)

    ``estimated_value`` is :math:`\hat q(x_i, \pi_e)` and ``estimated_reward_logged`` is
    :math:`\hat q(x_i, a_i)`. Unbiased if either the propensities or the reward model are
    right; its variance is that of IPS on the residuals, usually much smaller.
    Reference: Dudík, Langford & Li (2011).
    """

    name = "dr"
    needs_model = True

    def _estimate(self, v: dict[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        w = _take(v, "action_prob", rows) / _take(v, "pscore", rows)
        residual = _take(v, "reward", rows) - _take(v, "estimated_reward_logged", rows)
        return (_take(v, "estimated_value", rows) + w * residual).mean(axis=1)


ESTIMATORS: tuple[BaseEstimator, ...] = (
    InverseProbabilityWeighting(),
    SelfNormalizedInverseProbabilityWeighting(),
    DoublyRobust(),
)


def effective_sample_size(action_prob: np.ndarray, pscore: np.ndarray) -> float:
    r"""Return Kish's effective sample size :math:`(\sum w)^2 / \sum w^2` of the weights."""
    w = np.asarray(action_prob, dtype=np.float64) / np.asarray(pscore, dtype=np.float64)
    squares = float((w**2).sum())
    return float(w.sum() ** 2 / squares) if squares > 0 else math.nan
