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

import numpy as np

from features.arbitration import Exploration, Pick, rank_scores
from features.policy import ContactFacts, Policies, check_offer
from features.scoring import Candidate, ScoreContext, Scored, Scorer
from serving.eligibility import OfferContext, offer_rule, over_budget


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
        plans.append(OfferPlan(candidate, policies.offer_worth(offer.id, offer.kind, offer.cost)))
    return plans


class CandidatePool:
    """Eligible plans as a decision uses them: candidates, ids, worths, tie-break ranks.

    Built once per eligibility cache entry and shared by the requests it serves, so per
    request only the scores are new. Never modified after construction.
    """

    __slots__ = ("candidates", "ids", "plans", "tie", "worth", "worths")

    def __init__(self, plans: list[OfferPlan]) -> None:
        self.plans = plans
        # A tuple: shared by every request of a context, so nobody may change it (and a
        # scorer may keep what it derives from it, see models.adapter.RegistryScorer).
        self.candidates = tuple(p.candidate for p in plans)
        action_ids = [c.action_id for c in self.candidates]
        self.ids = frozenset(action_ids)
        self.worths = [p.worth for p in plans]
        self.worth = np.array(self.worths, dtype=np.float64)
        # Ranking breaks score ties by action id: each candidate's place in id order.
        self.tie = np.empty(len(plans), dtype=np.intp)
        self.tie[sorted(range(len(plans)), key=action_ids.__getitem__)] = np.arange(len(plans))


class EligibilityCache:
    """Eligible offers per context, reused while no offer's validity starts or ends.

    Eligibility depends on the context (channel, store, home store, tier, basket), on the
    budget spend only through the set of offers it exhausts, and on the time only through
    validity windows; so an entry holds between the two validity boundaries around the time
    it was computed, for the exhausted set it was computed with, and is exact, not
    approximate. Bounded: cleared when it holds ``max_entries``.
    """

    def __init__(self, plans: Sequence[OfferPlan], max_entries: int = 4096) -> None:
        offers = [p.candidate.offer for p in plans if p.candidate.offer is not None]
        self._edges = sorted({edge for o in offers for edge in (o.valid_from, o.valid_to)})
        # The key holds only what some offer's rules read (serving.eligibility.offer_rule):
        # the store's format and coffee corner, the tier, and where the basket falls among
        # the offers' minimum baskets; so contexts that cannot differ share an entry.
        self._store_limited = any(o.store_formats or o.requires_coffee_corner for o in offers)
        self._tiered = any(o.tiers for o in offers)
        self._baskets = sorted({o.min_basket for o in offers})
        self._entries: dict[tuple[Any, ...], Eligible] = {}
        self._max = max_entries
        # Spend matters only through which offers it exhausts; that set is computed again
        # only for a new spend mapping (by identity) and tags each entry.
        self._budgeted = [o for o in offers if o.budget is not None]
        self._spend: tuple[Mapping[str, float], frozenset[str]] | None = None

    def key(self, context: OfferContext) -> tuple[Any, ...]:
        """Return the cache key of ``context``: equal keys, equal eligibility (at one time)."""
        where = None
        if self._store_limited:
            store = context.store if context.channel == "store" else context.home_store
            where = None if store is None else (store.format, store.coffee_corner)
        basket = context.basket_value
        return (
            context.channel,
            where,
            context.tier if self._tiered else None,
            None if basket is None else bisect.bisect_right(self._baskets, basket),
        )

    def lookup(
        self, plans: Sequence[OfferPlan], context: OfferContext, spent: Mapping[str, float]
    ) -> Eligible:
        """Return the eligible plans and the excluded counts by rule for ``context``."""
        exhausted = self._exhausted(spent)
        key = self.key(context)
        entry = self._entries.get(key)
        now = context.now
        if (
            entry is not None
            and entry.exhausted == exhausted  # the same object, unless spend moved on
            and (entry.start is None or entry.start <= now)
            and (entry.end is None or now < entry.end)
        ):
            return entry
        plans_ok, excluded = eligible_plans(plans, context, spent)
        at = bisect.bisect_right(self._edges, now)
        start = self._edges[at - 1] if at else None
        end = self._edges[at] if at < len(self._edges) else None
        if len(self._entries) >= self._max:
            self._entries.clear()
        entry = self._entries[key] = Eligible(
            plans_ok, excluded, start, end, CandidatePool(plans_ok), exhausted
        )
        return entry

    def _exhausted(self, spent: Mapping[str, float]) -> frozenset[str]:
        """Return the budgeted offers ``spent`` exhausts (the same object while unchanged)."""
        memo = self._spend
        if memo is not None and memo[0] is spent:
            return memo[1]
        exhausted = frozenset(o.id for o in self._budgeted if over_budget(o, spent))
        if memo is not None and memo[1] == exhausted:
            exhausted = memo[1]
        self._spend = (spent, exhausted)  # one assignment: a reader sees a consistent pair
        return exhausted


@dataclass(frozen=True, slots=True)
class Eligible:
    """One cache entry: eligible plans, exclusions, when it holds, pool, exhausted offers."""

    plans: list[OfferPlan]
    excluded: dict[str, int]
    start: datetime | None
    end: datetime | None
    pool: CandidatePool
    exhausted: frozenset[str] = frozenset()


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
    """Everything decided: candidates with scores, ranking, picks, exclusions.

    ``candidates`` is shared with other outcomes of the same context (a tuple).
    ``scored`` may be a :class:`~features.scoring.LazyScores`: the contributions of the
    picks are computed; reading another candidate's computes it then.
    """

    candidates: Sequence[Candidate]
    scored: Sequence[Scored]
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
    exploration: Exploration,
    rng: random.Random,
    cache: EligibilityCache | None = None,
    spent: Mapping[str, float] | None = None,
) -> OffersOutcome:
    """Choose up to ``limit`` offers; see the module docstring for the steps.

    ``cache`` (optional) reuses eligibility across requests with the same context.
    ``spent`` is the budget spend per offer; the policies' ``budget_spent`` when ``None``.
    """
    if spent is None:
        spent = policies.budget_spent
    if cache is not None:
        entry = cache.lookup(plans, context, spent)
        pool, excluded = entry.pool, entry.excluded
    else:
        passing, excluded = eligible_plans(plans, context, spent)
        pool = CandidatePool(passing)
    suppressed: list[tuple[str, str]] = []
    # Only offers the customer redeemed or dismissed can be suppressed: look at the plans
    # one by one only when one of those is among them (in plan order, as the log expects).
    if (facts.redeemed and not pool.ids.isdisjoint(facts.redeemed)) or (
        facts.dismissed and not pool.ids.isdisjoint(facts.dismissed)
    ):
        eligible = []
        for plan in pool.plans:
            if rule := check_offer(plan.candidate.action_id, facts):
                suppressed.append((plan.candidate.action_id, rule))
            else:
                eligible.append(plan)
        pool = CandidatePool(eligible)
    candidates = pool.candidates
    scored: Sequence[Scored] = (
        scorer.score(features, candidates, score_context) if candidates else []
    )
    if len(scored) != len(candidates):
        message = (
            f"scorer {scorer.version!r} returned {len(scored)} scores for "
            f"{len(candidates)} candidates"
        )
        raise ValueError(message)
    probabilities = getattr(scored, "probabilities", None)
    if probabilities is not None:
        # Float64 products, the same numbers as Python's float products below.
        values = np.asarray(probabilities, dtype=np.float64) * pool.worth
        scores = values.tolist()
    else:
        scores = [s.probability * w for s, w in zip(scored, pool.worths, strict=True)]
        values = np.asarray(scores, dtype=np.float64)
    order = rank_scores(values, pool.tie)
    if probabilities is None:
        probabilities = [s.probability for s in scored]
    slate = exploration.choose(order, np.asarray(probabilities), pool.worth, limit, rng)
    picks = slate.picks
    explain = getattr(scored, "explain", None)
    if explain is not None and picks:
        explain([pick.index for pick in picks])  # the reasons shown: one model call
    return OffersOutcome(
        candidates, scored, scores, order, picks, slate.first_slot, suppressed, excluded
    )
