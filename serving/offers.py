"""Next best offers for one request, as a pure function of its inputs.

Steps: candidates from the catalog → eligibility (:mod:`serving.eligibility`) → suppression of
offers the customer redeemed or dismissed (:func:`features.policy.check_offer`) → scoring
(any :class:`~features.scoring.Scorer`) → arbitration score = probability × value × lever →
deterministic ranking → ε-greedy slate (:mod:`features.arbitration`).

An unknown visitor (``features is None``) goes through the same steps: the scorer then sees
only the context, so the answer is the popular eligible offers for that context.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from features.arbitration import Pick, explore, first_slot_propensities, rank
from features.policy import ContactFacts, Policies, check_offer
from features.scoring import Candidate, ScoreContext, Scored, Scorer
from serving.eligibility import OfferContext, offer_rule


@dataclass(frozen=True, slots=True)
class OfferPlan:
    """A catalog offer with its arbitration weight (value × lever) from the policies."""

    candidate: Candidate
    worth: float


def plan_offers(candidates: Sequence[Candidate], policies: Policies) -> list[OfferPlan]:
    """Precompute value × lever per offer (redone when the policies file changes)."""
    plans = []
    for candidate in candidates:
        offer = candidate.offer
        if offer is None:
            continue
        worth = policies.offer_value(offer.id, offer.kind, offer.cost) * policies.offer_lever(
            offer.id, offer.kind
        )
        plans.append(OfferPlan(candidate, worth))
    return plans


class EligibilityCache:
    """Eligible offers per context, reused while no offer's validity starts or ends.

    Eligibility depends on the context (channel, store, home store, tier, basket), on the
    budget spend of the policies in force and on the time only through validity windows;
    so an entry holds between the two validity boundaries around the time it was computed
    and is exact, not approximate. Bounded: cleared when it holds ``max_entries``.
    """

    def __init__(self, plans: Sequence[OfferPlan], max_entries: int = 4096) -> None:
        edges = set()
        for plan in plans:
            if plan.candidate.offer is not None:
                edges.update((plan.candidate.offer.valid_from, plan.candidate.offer.valid_to))
        self._edges = sorted(edges)
        self._entries: dict[tuple[Any, ...], Eligible] = {}
        self._max = max_entries

    def lookup(
        self, plans: Sequence[OfferPlan], context: OfferContext, spent: Mapping[str, float]
    ) -> tuple[list[OfferPlan], dict[str, int]]:
        """Return the eligible plans and the excluded counts by rule for ``context``."""
        key = (
            context.channel,
            context.store.id if context.store else None,
            context.home_store.id if context.home_store else None,
            context.tier,
            context.basket_value,
        )
        entry = self._entries.get(key)
        now = context.now
        if entry is not None and (entry.start is None or entry.start <= now) and (
            entry.end is None or now < entry.end
        ):
            return entry.plans, entry.excluded
        plans_ok, excluded = eligible_plans(plans, context, spent)
        at = bisect.bisect_right(self._edges, now)
        start = self._edges[at - 1] if at else None
        end = self._edges[at] if at < len(self._edges) else None
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = Eligible(plans_ok, excluded, start, end)
        return plans_ok, excluded


@dataclass(frozen=True, slots=True)
class Eligible:
    """One cache entry: the eligible plans, exclusions by rule, and when it holds."""

    plans: list[OfferPlan]
    excluded: dict[str, int]
    start: datetime | None
    end: datetime | None


def eligible_plans(
    plans: Sequence[OfferPlan], context: OfferContext, spent: Mapping[str, float]
) -> tuple[list[OfferPlan], dict[str, int]]:
    """Return the plans whose offers pass every eligibility rule, and exclusions by rule."""
    eligible: list[OfferPlan] = []
    excluded: dict[str, int] = {}
    for plan in plans:
        offer = plan.candidate.offer
        if offer is None:
            continue
        if rule := offer_rule(offer, context, spent):
            excluded[rule] = excluded.get(rule, 0) + 1
        else:
            eligible.append(plan)
    return eligible, excluded


@dataclass(frozen=True, slots=True)
class OffersOutcome:
    """Everything decided: candidates with scores, ranking, picks, exclusions."""

    candidates: list[Candidate]
    scored: list[Scored]
    scores: list[float]
    order: list[int]
    picks: list[Pick]
    first_slot: dict[int, float]
    suppressed: list[tuple[str, str]]
    excluded: dict[str, int]


def decide_offers(
    plans: Sequence[OfferPlan],
    *,
    features: Mapping[str, Any] | None,
    facts: ContactFacts,
    context: OfferContext,
    score_context: ScoreContext,
    scorer: Scorer,
    policies: Policies,
    limit: int,
    epsilon: float,
    rng: random.Random,
    cache: EligibilityCache | None = None,
) -> OffersOutcome:
    """Choose up to ``limit`` offers; see the module docstring for the steps.

    ``cache`` (optional) reuses eligibility across requests with the same context.
    """
    spent = policies.budget_spent
    if cache is not None:
        passing, excluded = cache.lookup(plans, context, spent)
    else:
        passing, excluded = eligible_plans(plans, context, spent)
    suppressed: list[tuple[str, str]] = []
    eligible = passing
    if facts.redeemed or facts.dismissed:
        eligible = []
        for plan in passing:
            if rule := check_offer(plan.candidate.action_id, facts):
                suppressed.append((plan.candidate.action_id, rule))
            else:
                eligible.append(plan)
    candidates = [p.candidate for p in eligible]
    scored = scorer.score(features, candidates, score_context) if candidates else []
    if len(scored) != len(candidates):
        message = (
            f"scorer {scorer.version!r} returned {len(scored)} scores for "
            f"{len(candidates)} candidates"
        )
        raise ValueError(message)
    scores = [s.probability * p.worth for s, p in zip(scored, eligible, strict=True)]
    order = rank([c.action_id for c in candidates], scores)
    picks = explore(order, limit, epsilon, rng)
    first = dict(zip(order, first_slot_propensities(len(order), epsilon), strict=True))
    return OffersOutcome(candidates, scored, scores, order, picks, first, suppressed, excluded)
