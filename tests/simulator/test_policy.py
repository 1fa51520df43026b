import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.policy import (
    EPSILON,
    Campaign,
    campaigns_for_day,
    draw,
    featured_offers,
    message_actions,
    onsite_actions,
    propensities,
)
from simulator.truth import offer_facts

WHEN = datetime(2026, 3, 3, 12, tzinfo=UTC)


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=60))
def test_propensities_are_positive_and_sum_to_one(scores):
    probs = propensities(scores)
    assert all(EPSILON / len(scores) <= p <= 1 for p in probs)
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)


def test_propensities_need_scores():
    with pytest.raises(ValueError, match="scores must not be empty"):
        propensities([])


def test_higher_scores_are_more_likely():
    low, high = propensities([0.0, 1.0])
    assert high > low


def test_draw_follows_the_propensities(catalog):
    facts = offer_facts(catalog)
    campaign = Campaign("cmp-x", ("of-disc-dairy", "of-pts-dairy", "of-xsell-pet"))
    actions = message_actions(campaign, facts, ["email", "sms"], WHEN, "basic", "st-001")
    assert len(actions) == 6
    rng = random.Random(1)
    counts: dict[tuple, int] = {}
    n = 20_000
    for _ in range(n):
        chosen = draw(actions, rng.random()).chosen
        counts[(chosen.offer_id, chosen.channel)] = (
            counts.get((chosen.offer_id, chosen.channel), 0) + 1
        )
    for candidate in draw(actions, 0.5).candidates:
        observed = counts[(candidate.offer_id, candidate.channel)] / n
        assert observed == pytest.approx(candidate.propensity, abs=0.015)


def test_eligibility_respects_tier_sales_channel_and_store_format(catalog):
    facts = offer_facts(catalog)
    campaign = Campaign("cmp-x", ("of-pts-gold-double", "of-hyper-household", "of-disc-dairy"))
    basic = message_actions(campaign, facts, ["email"], WHEN, "basic", "st-001")  # a supermarket
    assert [a.offer_id for a in basic] == ["of-disc-dairy"]
    gold = message_actions(campaign, facts, ["email"], WHEN, "gold", "st-007")  # a hypermarket
    assert len(gold) == 3
    web = onsite_actions(
        ["of-pts-app-install", "of-pts-web-pay", "of-pts-gold-double"], facts, "web", WHEN, None
    )
    assert [a.offer_id for a in web] == ["of-pts-web-pay"]


def test_campaigns_and_featured_offers_are_seeded(catalog):
    facts = offer_facts(catalog)
    a = campaigns_for_day(1, 0, WHEN, facts)
    assert a == campaigns_for_day(1, 0, WHEN, facts)
    assert a != campaigns_for_day(2, 0, WHEN, facts)
    featured = featured_offers(1, 0, "app", WHEN, facts)
    assert all(
        not facts[o].offer.sales_channels or "app" in facts[o].offer.sales_channels
        for o in featured
    )
