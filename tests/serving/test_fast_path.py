"""The vectorized pieces of the decision path equal the plain ones they replace, exactly."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.arbitration import EpsilonGreedy, rank, rank_scores
from features.catalog import load_catalog
from features.policy import ContactFacts, load_policies
from features.scoring import Candidate, HeuristicScorer, ScoreContext
from models.rows import (
    NBO_FEATURES,
    ActionContext,
    CustomerView,
    OfferTable,
    candidate_matrix,
    channel_matrix,
    channel_vector,
    nbo_vector,
)
from serving.eligibility import OfferContext
from serving.offers import EligibilityCache, decide_offers, eligible_plans, plan_offers
from serving.records import round6

CATALOG = load_catalog()
STORES = sorted(CATALOG.stores.values(), key=lambda s: s.id)
OFFER_IDS = sorted(CATALOG.offers)
NOW = datetime(2026, 3, 8, 12, tzinfo=UTC)


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
@settings(max_examples=300, deadline=None)
def test_round6_is_round_for_any_float(values):
    assert [_bits(v) for v in round6(values)] == [_bits(round(v, 6)) for v in values]


def test_round6_on_ties_and_near_ties():
    rng = random.Random(2)
    values = [k / 128 for k in range(-5000, 5000)]  # exact ties at the 7th decimal
    values += [(k + 0.5) / 1e6 for k in range(0, 10**6, 997)]  # nearly ties
    values += [math.nextafter(v, math.inf) for v in values[-500:]]
    values += [math.nextafter(v, -math.inf) for v in values[-500:]]
    values += [rng.random() * 20 - 5 for _ in range(5000)]
    values += [0.0, -0.0, 5e-324, -1e-9, 2**52 / 1e6, 1e300, -1e300]
    got = round6(values)
    assert [_bits(v) for v in got] == [_bits(round(v, 6)) for v in values]


@given(st.lists(st.sampled_from([0.0, -0.0, 0.1, 0.25, 1.0, 3.5, -2.0, math.nan]),
                max_size=40))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_rank_scores_is_rank(scores):
    ids = [f"of-{i:03d}" for i in range(len(scores))]
    random.Random(len(scores)).shuffle(ids)  # id order differs from index order
    tie = np.empty(len(ids), dtype=np.intp)
    tie[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    assert rank_scores(np.array(scores, dtype=np.float64), tie) == rank(ids, scores)


_CACHE: dict[str, EligibilityCache] = {}
_BUDGETED = sorted(o.id for o in CATALOG.offers.values() if o.budget is not None)
_SPENDS = {
    "none": {},
    "first exhausted": {_BUDGETED[0]: CATALOG.offers[_BUDGETED[0]].budget},
    "all exhausted": {o: CATALOG.offers[o].budget for o in _BUDGETED},
    "some spent": {o: 1.0 for o in _BUDGETED},
}


@given(
    channel=st.sampled_from(["web", "app", "store"]),
    store=st.one_of(st.none(), st.sampled_from(STORES)),
    home=st.one_of(st.none(), st.sampled_from(STORES)),
    tier=st.sampled_from([None, "basic", "silver", "gold"]),
    basket=st.one_of(st.none(), st.sampled_from([0.0, 4.99, 5.0, 10.0, 25.0, 1e9])),
    hours=st.integers(-24 * 400, 24 * 400),
    spends=st.lists(st.sampled_from(sorted(_SPENDS)), min_size=1, max_size=3),
)
@settings(max_examples=400, deadline=None)
def test_the_eligibility_cache_answers_as_the_rules(
    channel, store, home, tier, basket, hours, spends
):
    policies = load_policies()
    plans = plan_offers([Candidate.of(CATALOG.offers[i]) for i in OFFER_IDS], policies)
    cache = _CACHE.setdefault("cache", EligibilityCache(plans))
    # Budget spend as serving passes it: new mappings, some equal to earlier ones, some
    # exhausting offers (one shared cache across all examples, as in a server).
    times = [NOW + timedelta(hours=hours), NOW]  # the entry of another time, then now
    for when, spend in [(t, dict(_SPENDS[name])) for name in spends for t in times]:
        context = OfferContext(channel, when, store, home, tier, basket)
        entry = cache.lookup(plans, context, spend)
        plain, excluded = eligible_plans(plans, context, spend)
        assert [p.candidate.action_id for p in entry.plans] == [
            p.candidate.action_id for p in plain
        ]
        assert entry.excluded == excluded
        assert list(entry.pool.candidates) == [p.candidate for p in plain]




def _views(rng: random.Random) -> list[CustomerView]:
    views = [CustomerView.empty()]
    categories = sorted({o.category for o in CATALOG.offers.values() if o.category})
    for _ in range(60):
        views.append(CustomerView.from_features({
            "category_affinity": {c: rng.random() for c in rng.sample(categories, 3)},
            "top_category": rng.choice([None, "", *categories]),
            "offers_seen": [*rng.sample(OFFER_IDS, 4), "of-gone"],
            "offers_redeemed": rng.sample(OFFER_IDS, rng.randint(0, 2)),
            "offers_dismissed": rng.sample(OFFER_IDS, rng.randint(0, 2)),
            "last_store": rng.choice([None, "st-999", *(s.id for s in STORES)]),
            "tz_offset_min": rng.choice([None, 0, 60, -300]),
            "active_hour": rng.choice([None, 4, 19]),
            "open_rate_email": rng.random(), "tenure_days": rng.randint(0, 90),
        }))  # fmt: skip
    return views


def test_matrices_are_the_rows_stacked():
    rng = random.Random(4)
    table = OfferTable.from_catalog(CATALOG)
    for view in _views(rng):
        ctx = ActionContext(
            at=NOW + timedelta(hours=rng.randint(0, 48)),
            surface=rng.choice(["offers", "channel"]),
            page=rng.choice([None, "home"]),
            store_id=rng.choice([None, "st-001"]),
        )
        for channels in (["web"], ["app", "web", "email", "push"]):
            actions = [(rng.choice(OFFER_IDS), rng.choice(channels)) for _ in range(50)]
            fast = candidate_matrix(view, table, actions, ctx)
            rows = np.array([nbo_vector(view, table, o, c, ctx) for o, c in actions])
            assert fast.shape == (50, len(NBO_FEATURES))
            np.testing.assert_array_equal(fast, rows)  # NaN where NaN, every value equal
        names = ["email", "push", "sms", "messenger", "web"]
        stacked = np.array([channel_vector(view, c, ctx) for c in names])
        np.testing.assert_array_equal(channel_matrix(view, names, ctx), stacked)
    assert candidate_matrix(CustomerView.empty(), table, [], ActionContext(at=NOW)).shape == (
        0, len(NBO_FEATURES))  # fmt: skip
    with pytest.raises(KeyError, match="unknown offer 'of-nope'"):
        candidate_matrix(CustomerView.empty(), table, [("of-nope", "web")], ActionContext(at=NOW))


def test_suppression_keeps_plan_order_and_skips_when_nothing_matches():
    policies = load_policies()
    plans = plan_offers([Candidate.of(CATALOG.offers[i]) for i in OFFER_IDS], policies)
    context = OfferContext("web", NOW, home_store=STORES[0], tier="gold")
    score_context = ScoreContext(surface="offers", channel="web", now=NOW)

    def decide(facts: ContactFacts, cache: EligibilityCache | None):
        return decide_offers(plans, features=None, facts=facts, context=context,
                             score_context=score_context, scorer=HeuristicScorer(),
                             policies=policies, limit=5, exploration=EpsilonGreedy(0.1),
                             rng=random.Random(1),
                             cache=cache)  # fmt: skip

    eligible = [p.candidate.action_id for p in eligible_plans(plans, context, {})[0]]
    facts = ContactFacts(redeemed=frozenset({eligible[3], "of-unknown"}),
                         dismissed=frozenset({eligible[1]}))  # fmt: skip
    cache = EligibilityCache(plans)
    for outcome in (decide(facts, None), decide(facts, cache), decide(facts, cache)):
        assert outcome.suppressed == [(eligible[1], "offer_dismissed"),
                                      (eligible[3], "offer_redeemed")]  # fmt: skip
        assert [c.action_id for c in outcome.candidates] == [
            i for i in eligible if i not in (eligible[1], eligible[3])
        ]
    nothing = decide(ContactFacts(redeemed=frozenset({"of-unknown"})), cache)
    assert nothing.suppressed == [] and len(nothing.candidates) == len(eligible)
    assert nothing.candidates is cache.lookup(plans, context, {}).pool.candidates  # shared
