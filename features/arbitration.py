r"""Arbitration and exploration: rank by propensity × value × lever, then explore ε-greedily.

Ranking is deterministic: by arbitration score, descending, then by action id. Exploration
picks a slate of ``k`` actions position by position: at each position it takes the best
remaining action with probability :math:`1 - \varepsilon` and otherwise one of the :math:`m`
remaining actions uniformly at random, so the chosen action's probability at that position is

.. math::

    \pi = (1 - \varepsilon)\,[\text{it is the best remaining}] + \varepsilon / m

exactly; over the remaining actions these sum to 1. The decision log records, for every
chosen action, this conditional propensity, and for every candidate its first-position
propensity (:func:`first_slot_propensities`), so off-policy estimators can reweight.

>>> import random
>>> [round(p, 3) for p in first_slot_propensities(4, 0.2)]
[0.85, 0.05, 0.05, 0.05]
>>> [p.index for p in explore([2, 0, 1], 2, 0.0, random.Random(1))]
[2, 0]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def arbitration_score(probability: float, value: float, lever: float) -> float:
    """Return propensity × value × business lever."""
    return probability * value * lever


def rank(ids: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Return indices ordered by score (descending), ties broken by id (ascending)."""
    keyed = sorted(zip([-s for s in scores], ids, range(len(ids)), strict=True))
    return [i for _, _, i in keyed]


def rank_scores(scores: np.ndarray, tie: np.ndarray) -> list[int]:
    """Return :func:`rank`'s order from float64 ``scores`` and each action's place in id order.

    The same order as ``rank(ids, scores)`` when ``tie`` ranks the ids (ties by id), by a
    numpy sort instead of sorting tuples; a NaN score sorts the tuples, as :func:`rank`
    does, so even that order is the same.
    """
    if len(scores) and np.isnan(scores).any():
        negated, ties = (-scores).tolist(), tie.tolist()
        return sorted(range(len(negated)), key=lambda i: (negated[i], ties[i]))
    return np.lexsort((tie, -scores)).tolist()


def first_slot_propensities(n: int, epsilon: float) -> list[float]:
    r"""Return the probability of each of ``n`` ranked actions to be picked first.

    Ordered as the ranking: the best gets :math:`1 - \varepsilon + \varepsilon / n`.
    """
    if n <= 0:
        return []
    share = epsilon / n
    return [1.0 - epsilon + share] + [share] * (n - 1)


@dataclass(frozen=True, slots=True)
class Pick:
    """One chosen action: its index among the candidates and its propensity at its position."""

    index: int
    propensity: float
    explored: bool


def explore(order: Sequence[int], k: int, epsilon: float, rng: random.Random) -> list[Pick]:
    """Pick up to ``k`` actions from ``order`` (best first), ε-greedily, position by position.

    Raises
    ------
    ValueError
        If ``epsilon`` is outside ``[0, 1]``.

    """
    if not 0.0 <= epsilon <= 1.0:
        message = f"epsilon must be within [0, 1]; got {epsilon!r}"
        raise ValueError(message)
    remaining = list(order)
    picks: list[Pick] = []
    while remaining and len(picks) < k:
        m = len(remaining)
        explored = rng.random() < epsilon
        position = rng.randrange(m) if explored else 0
        propensity = epsilon / m + (1.0 - epsilon if position == 0 else 0.0)
        picks.append(Pick(remaining.pop(position), propensity, explored))
    return picks
