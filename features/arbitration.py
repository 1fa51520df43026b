r"""Arbitration and exploration: rank by propensity × value × lever, then explore.

Two explorations, a setting: ε-greedy (:class:`EpsilonGreedy`, exact propensities, below) and
Thompson sampling (:class:`Thompson`, propensities by Monte Carlo, see there).

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
from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class Slate:
    """The picks, best position first, and each candidate's first-position propensity."""

    picks: list[Pick]
    first_slot: dict[int, float]


class Exploration(Protocol):
    """How a slate is picked from the ranked candidates, and with which propensities."""

    @property
    def name(self) -> str:
        """Short name for the decision log's ``policy``, e.g. ``"egreedy-0.05"``."""
        ...

    def choose(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        k: int,
        rng: random.Random,
    ) -> Slate:
        """Pick up to ``k`` of ``order`` (candidate indices, best first by the mean).

        ``probabilities`` and ``worth`` (value × lever) are indexed by candidate index;
        the arbitration score of a candidate is their product.
        """
        ...

    def first_slot(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        rng: random.Random,
    ) -> np.ndarray:
        """Return each candidate's probability of the first position, by candidate index.

        What an off-policy evaluation of this exploration needs: the policy's probability
        of whichever action was logged first.
        """
        ...


@dataclass(frozen=True, slots=True)
class EpsilonGreedy:
    """ε-greedy (:func:`explore`): exact propensities, the ranking's order is all it reads."""

    epsilon: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            message = f"epsilon must be within [0, 1]; got {self.epsilon!r}"
            raise ValueError(message)

    @property
    def name(self) -> str:
        return f"egreedy-{self.epsilon:g}"

    def choose(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        k: int,
        rng: random.Random,
    ) -> Slate:
        first = first_slot_propensities(len(order), self.epsilon)
        return Slate(explore(order, k, self.epsilon, rng), dict(zip(order, first, strict=True)))

    def first_slot(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        rng: random.Random,
    ) -> np.ndarray:
        """Exact: the best ``1 - ε + ε/n``, every other ``ε/n``; ``rng`` is not used."""
        first = np.zeros(len(probabilities))
        first[np.asarray(order, dtype=np.intp)] = first_slot_propensities(len(order), self.epsilon)
        return first


@dataclass(frozen=True, slots=True)
class Thompson:
    r"""Thompson sampling around the model's estimates, with Monte Carlo propensities.

    The model gives each candidate a probability :math:`p`, not a posterior. Each is taken
    as worth ``strength`` observations: its logit is drawn from the normal with the
    variance those would leave, :math:`1 / (n\,p\,(1-p))` (the Laplace approximation of
    Chapelle & Li, 2011), so a candidate with little chance is drawn more widely on the
    logit scale. One draw of every candidate decides: the slate is the top ``k`` of
    :math:`\sigma(\text{draw}) \times` worth. The propensities are the shares of
    ``draws`` such draws (the deciding one among them) in which a candidate comes first,
    or, at a later position, comes first among those not picked before it, as Open Bandit
    Pipeline estimates them. So a candidate that no draw put first is logged with 0, and
    a chosen one with at least ``1 / draws``. ``strength`` is one number for every
    candidate: per-offer evidence (how often each was shown) is not used.

    >>> t = Thompson(strength=50, draws=100)
    >>> slate = t.choose([0, 1, 2], np.array([0.05, 0.04, 0.01]), np.ones(3), 2,
    ...                  random.Random(7))
    >>> [p.index for p in slate.picks], round(sum(slate.first_slot.values()), 6)
    ([0, 1], 1.0)
    """

    strength: float = 100.0
    draws: int = 100
    _floor: float = field(default=1e-6, repr=False)

    def __post_init__(self) -> None:
        if not self.strength > 0:
            message = f"Thompson strength must be > 0; got {self.strength!r}"
            raise ValueError(message)
        if self.draws < 1:
            message = f"Thompson draws must be >= 1; got {self.draws!r}"
            raise ValueError(message)

    @property
    def name(self) -> str:
        return f"thompson-{self.strength:g}"

    def choose(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        k: int,
        rng: random.Random,
    ) -> Slate:
        m = len(order)
        if m == 0 or k <= 0:
            return Slate([], {i: 0.0 for i in order})
        scores = self._drawn_scores(order, probabilities, worth, rng)
        deciding = np.argsort(-scores[0], kind="stable")[: min(k, m)]
        first = np.bincount(scores.argmax(axis=1), minlength=m) / self.draws
        picks: list[Pick] = []
        taken = np.zeros(m, dtype=bool)
        for position, column in enumerate(deciding.tolist()):
            if position == 0:
                propensity = float(first[column])
            else:
                remaining = np.where(taken, -np.inf, scores)  # a taken one never wins
                propensity = float(np.mean(remaining.argmax(axis=1) == column))
            best_left = int(np.flatnonzero(~taken)[0])
            picks.append(Pick(int(order[column]), propensity, column != best_left))
            taken[column] = True
        return Slate(picks, dict(zip(order, first.tolist(), strict=True)))

    def first_slot(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        rng: random.Random,
    ) -> np.ndarray:
        """Return the share of ``draws`` draws that put each candidate first (0: never first).

        >>> t = Thompson(strength=50, draws=2000)
        >>> first = t.first_slot([0, 1], np.array([0.05, 0.04]), np.ones(2), random.Random(3))
        >>> bool(first[0] > first[1] > 0.2), float(first.sum())
        (True, 1.0)
        """
        shares = np.zeros(len(probabilities))
        if len(order):
            scores = self._drawn_scores(order, probabilities, worth, rng)
            first = np.bincount(scores.argmax(axis=1), minlength=len(order)) / self.draws
            shares[np.asarray(order, dtype=np.intp)] = first
        return shares

    def _drawn_scores(
        self,
        order: Sequence[int],
        probabilities: np.ndarray,
        worth: np.ndarray,
        rng: random.Random,
    ) -> np.ndarray:
        """``draws`` × ``len(order)`` arbitration scores of sampled probabilities."""
        m = len(order)
        # Columns in the ranking's order: ties among draws go to the better-ranked.
        columns = np.asarray(order, dtype=np.intp)
        p = np.nan_to_num(np.asarray(probabilities, dtype=np.float64)[columns], nan=self._floor)
        p = np.clip(p, self._floor, 1.0 - self._floor)
        logit = (np.log(p) - np.log1p(-p)).astype(np.float32)
        spread = (1.0 / np.sqrt(self.strength * p * (1.0 - p))).astype(np.float32)
        generator = np.random.default_rng(rng.getrandbits(64))
        drawn = generator.standard_normal((self.draws, m), dtype=np.float32)
        drawn *= spread
        drawn += logit
        # worth × sigmoid(drawn), in float32: exp overflows to inf, and 1 / inf is 0.
        with np.errstate(over="ignore"):
            np.negative(drawn, out=drawn)
            np.exp(drawn, out=drawn)
        drawn += 1.0
        scores = np.asarray(worth, dtype=np.float32)[columns] / drawn
        return np.nan_to_num(scores, nan=np.finfo(np.float32).min)  # below any taken: -inf
