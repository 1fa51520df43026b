r"""Scorers: the pluggable propensity model behind both decisions, and the heuristic default.

A :class:`Scorer` turns profile features and candidates into one :class:`Scored` per candidate:
a probability in ``[0, 1]`` (that the customer accepts the offer, or reads the message on the
channel) and the *contributions* that explain it, as ``(name, value)`` pairs on the score's
scale (a LightGBM model's log-odds contributions fit directly). Serving turns the largest
contributions of the chosen actions into words (``serving.reasons``).

Until a model is promoted, serving scores with :class:`HeuristicScorer` (``heuristic-v1``):

.. math::

    z_{offer} = -2.5 + prior(kind) + 3\,affinity(category)
        + 1.5 \sum_{p} persona_p\,K[p, kind] + 0.5\,[\text{offer made for this channel}]

    p_{offer} = \sigma(z_{offer})

    p_{channel} = \min\big(1,\ open\_rate_{channel}\,(1 + 0.5\,persona_{social}\,
        [\text{channel} \in \{push, messenger\}])\big)

``affinity`` is the profile's ``category_affinity`` of the offer's category (0 without one),
``prior`` the popularity of the offer kind, ``K`` the persona × kind table below, and
``open_rate`` the Laplace-smoothed open rate (0.5 for a channel never tried). An unknown
visitor (no features) gets the prior and the channel fit only: popular offers for the context.

>>> from features.catalog import load_catalog
>>> offer = load_catalog().offers["of-disc-dairy"]
>>> ctx = ScoreContext(surface="offers", channel="web")
>>> features = {"category_affinity": {"dairy": 0.5}}
>>> [s] = HeuristicScorer().score(features, [Candidate.of(offer)], ctx)
>>> round(s.probability, 3), s.contributions[0]
(0.401, ('prior:discount', 0.6))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from features.catalog import Offer

HEURISTIC_VERSION = "heuristic-v1"
PERSONAS = ("discount_hunter", "newcomer", "toucher", "social", "procrastinator")

INTERCEPT = -2.5
AFFINITY_WEIGHT = 3.0
PERSONA_WEIGHT = 1.5
CHANNEL_FIT = 0.5
SOCIAL_BOOST = 0.5
SOCIAL_CHANNELS = frozenset({"push", "messenger"})
# The same popularity prior per kind as the simulator's logging policy.
KIND_PRIOR = {"discount": 0.6, "bonus_points": 0.4, "free_delivery": 0.2, "cross_sell": 0.0}
# How much each persona likes each kind of offer, in [0, 1]; columns in KIND_PRIOR order.
_PERSONA_ROWS = {
    #                  discount  bonus_points  free_delivery  cross_sell
    "discount_hunter": (1.0,     0.5,          0.3,           0.0),
    "newcomer":        (0.3,     0.6,          0.8,           0.2),
    "toucher":         (0.3,     0.3,          0.7,           0.4),
    "social":          (0.2,     0.6,          0.2,           0.6),
    "procrastinator":  (0.6,     0.2,          0.6,           0.1),
}  # fmt: skip
PERSONA_KIND = {
    persona: dict(zip(KIND_PRIOR, row, strict=True)) for persona, row in _PERSONA_ROWS.items()
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One action to score: an offer (on-site) or a messaging channel."""

    action_id: str
    offer: Offer | None = None
    channel: str | None = None

    @classmethod
    def of(cls, offer: Offer) -> Candidate:
        """Return the candidate for an offer."""
        return cls(offer.id, offer=offer)

    @classmethod
    def via(cls, channel: str) -> Candidate:
        """Return the candidate for a messaging channel."""
        return cls(channel, channel=channel)


@dataclass(frozen=True, slots=True)
class ScoreContext:
    """Where the decision is asked: ``channel`` is the sales channel for offers."""

    surface: Literal["offers", "channel"]
    channel: str | None = None
    page: str | None = None
    store_id: str | None = None
    placement: str | None = None
    campaign: str | None = None
    offer_id: str | None = None
    message_kind: str | None = None
    now: datetime | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    """A candidate's probability and the named contributions that explain it."""

    probability: float
    contributions: tuple[tuple[str, float], ...] = ()


@runtime_checkable
class Scorer(Protocol):
    """What serving needs from a model: a version and one :class:`Scored` per candidate.

    ``features`` is the output of :func:`features.profile.profile_features`, or ``None``
    for an unknown visitor. Implementations must be safe to call from several threads and
    must return the candidates' scores in the order given: a list, or a
    :class:`LazyScores` when the contributions are costly (a LightGBM model's).
    """

    version: str

    def score(
        self,
        features: Mapping[str, Any] | None,
        candidates: Sequence[Candidate],
        context: ScoreContext,
    ) -> Sequence[Scored]:
        """Score ``candidates`` for one customer in one context."""
        ...


class LazyScores(Protocol):
    """Scores whose probabilities are ready and whose contributions are computed on demand.

    Items have ``probability`` and ``contributions`` as :class:`Scored` has (computing
    the contributions on first read); ``probabilities`` lists the probabilities as floats,
    and ``explain`` computes the contributions of several items at once. Serving reads
    the probabilities of all candidates and the contributions of the ones it shows only.
    """

    probabilities: Sequence[float]

    def __len__(self) -> int:
        """Return the number of candidates."""
        ...

    def __getitem__(self, index: int) -> Scored:
        """Return one candidate's score."""
        ...

    def explain(self, indices: Iterable[int]) -> None:
        """Compute the contributions of these candidates now (one model call)."""
        ...


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class HeuristicScorer:
    """The documented heuristic (module docstring): no training, explainable, always there."""

    version = HEURISTIC_VERSION

    def score(
        self,
        features: Mapping[str, Any] | None,
        candidates: Sequence[Candidate],
        context: ScoreContext,
    ) -> list[Scored]:
        """Score offers or channels with the heuristic formulas."""
        features = features or {}
        if context.surface == "channel":
            return [self._channel(features, c.channel or c.action_id) for c in candidates]
        affinity = features.get("category_affinity") or {}
        personas = [(p, features.get(f"persona_{p}") or 0.0) for p in PERSONAS]
        # The persona term depends on the kind only: compute it once per kind, not per offer.
        by_kind: dict[str, tuple[float, str | None]] = {}
        for kind in KIND_PRIOR:
            parts = [(p, PERSONA_WEIGHT * v * PERSONA_KIND[p][kind]) for p, v in personas]
            total = sum(value for _, value in parts)
            top = max(parts, key=lambda part: part[1])
            by_kind[kind] = (total, top[0] if top[1] > 0 else None)
        # Many offers share kind, category and channel fit: score each combination once.
        seen: dict[tuple[str, str | None, bool], Scored] = {}
        out = []
        for candidate in candidates:
            offer = candidate.offer
            if offer is None:
                out.append(Scored(0.0))
                continue
            fits = offer.sales_channels == [context.channel]
            key = (offer.kind, offer.category, fits)
            scored = seen.get(key)
            if scored is None:
                scored = seen[key] = self._offer(key, affinity, by_kind, context.channel)
            out.append(scored)
        return out

    @staticmethod
    def _offer(
        key: tuple[str, str | None, bool],
        affinity: Mapping[str, float],
        by_kind: Mapping[str, tuple[float, str | None]],
        channel: str | None,
    ) -> Scored:
        kind, category, fits = key
        prior = KIND_PRIOR.get(kind, 0.0)
        aff = AFFINITY_WEIGHT * affinity.get(category, 0.0) if category else 0.0
        persona, top_persona = by_kind.get(kind, (0.0, None))
        fit = CHANNEL_FIT if fits else 0.0
        contributions = [(f"prior:{kind}", prior)]
        if aff:
            contributions.append((f"affinity:{category}", aff))
        if persona:
            contributions.append((f"persona:{top_persona}", persona))
        if fit:
            contributions.append((f"channel_fit:{channel}", fit))
        return Scored(_sigmoid(INTERCEPT + prior + aff + persona + fit), tuple(contributions))

    @staticmethod
    def _channel(features: Mapping[str, Any], channel: str) -> Scored:
        rate = features.get(f"open_rate_{channel}")
        rate = 0.5 if rate is None else float(rate)
        contributions = [(f"open_rate:{channel}", rate)]
        boost = 0.0
        if channel in SOCIAL_CHANNELS:
            boost = rate * SOCIAL_BOOST * float(features.get("persona_social") or 0.0)
            if boost:
                contributions.append(("persona:social", boost))
        return Scored(min(1.0, rate + boost), tuple(contributions))
