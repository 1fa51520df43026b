r"""The known randomized logging policy that chose past exposures.

For a context (a customer, a time, a campaign or a page) the policy scores every eligible
action :math:`a = (o, c)` (offer, channel) with a fixed popularity score
:math:`s_a = k_{kind(o)} + 2 \delta_o + q_c` and picks one with probability

.. math::

    \pi(a) = (1 - \varepsilon) \frac{e^{s_a / \tau}}{\sum_b e^{s_b / \tau}}
        + \frac{\varepsilon}{|A|}

so every eligible action has a propensity above :math:`\varepsilon / |A| > 0`, and the
propensities of the candidates sum to 1. The policy never looks at a customer's hidden
traits; it only knows tier, home store and consent, as a real CRM would.

>>> [round(p, 3) for p in propensities([0.0, 0.0, 0.0, 0.0])]
[0.25, 0.25, 0.25, 0.25]
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from features.decisions import Choice, Decision, DecisionContext
from features.events import Identifiers
from simulator.truth import OfferFacts

LOGGING_POLICY = "logging-v1"
EPSILON = 0.2
TEMPERATURE = 1.0
KIND_PRIOR = {"discount": 0.6, "bonus_points": 0.4, "free_delivery": 0.2, "cross_sell": 0.0}
CHANNEL_PRIOR = {"email": 0.6, "push": 0.4, "messenger": 0.2, "sms": -0.4, "web": 0.0, "app": 0.0}
CAMPAIGNS_PER_DAY = 2
OFFERS_PER_CAMPAIGN = 6
FEATURED_PER_CHANNEL = 8
HOME_PLACEMENT = "home-hero"


@dataclass(frozen=True)
class Campaign:
    """A marketing send: an id and the offers it may carry."""

    campaign_id: str
    offer_ids: tuple[str, ...]


@dataclass(frozen=True)
class Action:
    """One thing the policy could do: an offer in a channel, with its score."""

    offer_id: str
    channel: str
    score: float


@dataclass(frozen=True)
class Draw:
    """The action picked, with its propensity, and every candidate with its own."""

    chosen: Choice
    candidates: list[Choice]


def popularity(facts: OfferFacts) -> float:
    """Return the policy's offer score: a prior by kind plus twice the offer's depth."""
    return KIND_PRIOR[facts.offer.kind] + 2.0 * facts.depth


def propensities(
    scores: Sequence[float], epsilon: float = EPSILON, temperature: float = TEMPERATURE
) -> list[float]:
    """Return the ε-greedy softmax probabilities of ``scores`` (they sum to 1)."""
    if not scores:
        message = "scores must not be empty"
        raise ValueError(message)
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = sum(weights)
    uniform = epsilon / len(scores)
    return [(1.0 - epsilon) * w / total + uniform for w in weights]


def offer_allowed(
    facts: OfferFacts, at_ts: float, tier: str | None, home_store: str | None
) -> bool:
    """Return whether the policy may propose the offer to this customer at epoch ``at_ts``.

    An unknown tier (an anonymous visitor) excludes tier-limited offers; store-only offers
    need a home store where they can be redeemed.
    """
    offer = facts.offer
    if not facts.valid_at(at_ts):
        return False
    if offer.tiers and tier not in offer.tiers:
        return False
    return not facts.store_only or home_store in facts.redeemable_stores


def message_actions(
    campaign: Campaign,
    facts: dict[str, OfferFacts],
    channels: Sequence[str],
    when: datetime,
    tier: str | None,
    home_store: str | None,
) -> list[Action]:
    """Return the campaign's eligible offers crossed with the consented channels."""
    actions = []
    at_ts = when.timestamp()
    for offer_id in campaign.offer_ids:
        f = facts[offer_id]
        if offer_allowed(f, at_ts, tier, home_store):
            base = popularity(f)
            actions.extend(Action(offer_id, c, base + CHANNEL_PRIOR[c]) for c in channels)
    return actions


def onsite_actions(
    pool: Sequence[str],
    facts: dict[str, OfferFacts],
    channel: str,
    when: datetime,
    tier: str | None,
) -> list[Action]:
    """Return the featured offers that can be redeemed on ``channel`` (web or app)."""
    actions = []
    at_ts = when.timestamp()
    for offer_id in pool:
        f = facts[offer_id]
        sales = f.offer.sales_channels
        if (not sales or channel in sales) and offer_allowed(f, at_ts, tier, None):
            actions.append(Action(offer_id, channel, popularity(f)))
    return actions


@dataclass(frozen=True)
class Table:
    """The policy's distribution over one candidate set, ready to sample from."""

    candidates: list[Choice]
    cumulative: list[float]


def table(actions: Sequence[Action]) -> Table:
    """Return the candidates with their propensities, and the running sums to invert."""
    probs = propensities([a.score for a in actions])
    candidates = [
        Choice(offer_id=a.offer_id, channel=a.channel, propensity=p, score=a.score)  # type: ignore[arg-type]
        for a, p in zip(actions, probs, strict=True)
    ]
    return Table(candidates, list(itertools.accumulate(probs)))


def pick(distribution: Table, u: float, send_at: datetime | None = None) -> Draw:
    """Pick the candidate at the uniform draw ``u`` (inverse CDF), stamped with ``send_at``."""
    index = min(bisect.bisect_right(distribution.cumulative, u), len(distribution.candidates) - 1)
    chosen = distribution.candidates[index]
    if send_at is not None:
        chosen = msgspec.structs.replace(chosen, send_at=send_at)
    return Draw(chosen, distribution.candidates)


def draw(actions: Sequence[Action], u: float, send_at: datetime | None = None) -> Draw:
    """Pick an action by inverting the policy's distribution at the uniform draw ``u``."""
    return pick(table(actions), u, send_at)


def campaigns_for_day(
    seed: int, day: int, day_start: datetime, facts: dict[str, OfferFacts]
) -> tuple[Campaign, ...]:
    """Return the day's campaigns, each carrying a few offers valid that day."""
    valid = [offer_id for offer_id, f in facts.items() if f.offer.valid_at(day_start)]
    campaigns = []
    for k in range(CAMPAIGNS_PER_DAY):
        rng = random.Random(f"{seed}:campaign:{day}:{k}")
        offers = tuple(sorted(rng.sample(valid, min(OFFERS_PER_CAMPAIGN, len(valid)))))
        campaigns.append(Campaign(f"cmp-{day_start:%Y%m%d}-{k}", offers))
    return tuple(campaigns)


def featured_offers(
    seed: int, day: int, channel: str, day_start: datetime, facts: dict[str, OfferFacts]
) -> tuple[str, ...]:
    """Return the day's featured offers for on-site placements on ``channel``."""
    usable = [
        offer_id
        for offer_id, f in facts.items()
        if f.offer.valid_at(day_start)
        and (not f.offer.sales_channels or channel in f.offer.sales_channels)
    ]
    rng = random.Random(f"{seed}:featured:{day}:{channel}")
    return tuple(sorted(rng.sample(usable, min(FEATURED_PER_CHANNEL, len(usable)))))


def message_decision(
    decision_id: str, decided_at: datetime, ids: Identifiers, campaign: str, picked: Draw
) -> Decision:
    """Return the logged record of a marketing message chosen by the logging policy."""
    return Decision(
        decision_id=decision_id,
        decided_at=decided_at,
        surface="channel",
        ids=ids,
        policy=LOGGING_POLICY,
        chosen=[picked.chosen],
        candidates=picked.candidates,
        context=DecisionContext(channel="messaging", campaign=campaign, message_kind="marketing"),
    )


def onsite_decision(
    decision_id: str, decided_at: datetime, ids: Identifiers, channel: str, picked: Draw
) -> Decision:
    """Return the logged record of an offer shown at a web or app page load."""
    return Decision(
        decision_id=decision_id,
        decided_at=decided_at,
        surface="offers",
        ids=ids,
        policy=LOGGING_POLICY,
        chosen=[picked.chosen],
        candidates=picked.candidates,
        context=DecisionContext(channel=channel, page="home", placement=HOME_PLACEMENT),  # type: ignore[arg-type]
    )
