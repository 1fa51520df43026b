import random
import statistics
from dataclasses import replace

import pytest

from simulator import SimulationConfig, make_world
from simulator.truth import (
    conversion_probability,
    hour_match,
    offer_depth,
    offer_facts,
    onsite_conversion_probability,
    open_probability,
)
from simulator.world import MESSAGE_CHANNELS


@pytest.fixture(scope="module")
def world(catalog):
    return make_world(SimulationConfig(customers=1500, seed=9), catalog)


@pytest.fixture(scope="module")
def facts(catalog):
    return offer_facts(catalog)


def test_hour_match_is_circular():
    assert hour_match(23, 1) == pytest.approx(hour_match(3, 1))
    assert hour_match(5, 5) == 1.0
    assert hour_match(17, 5) < 1e-4


def test_offer_depth(catalog):
    offers = catalog.offers
    assert offer_depth(offers["of-disc25-snacks"]) == pytest.approx(0.25)
    assert offer_depth(offers["of-pts-dairy"]) == pytest.approx(200 / 100 / 30)


def test_no_consent_means_no_response(world, facts):
    customer = next(c for c in world.customers if not c.consent["sms"])
    f = facts["of-disc-dairy"]
    assert conversion_probability(customer, f, "sms", customer.peak_hour) == 0
    assert open_probability(customer, "sms", customer.peak_hour) == 0


def test_base_rates_are_realistic_and_the_best_offer_is_several_times_better(world, facts):
    rng = random.Random(0)
    random_p, best_p = [], []
    for c in world.customers:
        channels = [ch for ch in MESSAGE_CHANNELS if c.consent[ch]]
        if not channels:
            continue
        hour = rng.uniform(8, 21)
        offer = facts[rng.choice(sorted(facts))]
        random_p.append(conversion_probability(c, offer, rng.choice(channels), hour))
        best_p.append(
            max(conversion_probability(c, f, ch, hour) for f in facts.values() for ch in channels)
        )
    base = statistics.mean(random_p)
    assert 0.01 < base < 0.05
    assert statistics.mean(best_p) > 4 * base


def test_persona_effects(world, facts):
    hunter = next(
        c for c in world.customers if c.dominant_persona == "discount_hunter" and c.consent["email"]
    )
    neutral = replace(
        hunter, persona_mix={**dict.fromkeys(hunter.persona_mix, 0.0), "procrastinator": 1.0}
    )
    deep = facts["of-disc25-snacks"]
    hunter = replace(hunter, tier="gold")
    neutral = replace(neutral, tier="gold")
    channel = "email"
    assert conversion_probability(hunter, deep, channel, 12) > 1.5 * conversion_probability(
        neutral, deep, channel, 12
    )
    social = replace(
        neutral,
        persona_mix={**neutral.persona_mix, "procrastinator": 0.0, "social": 1.0},
        consent=dict.fromkeys(MESSAGE_CHANNELS, True),
        responsiveness=dict.fromkeys(MESSAGE_CHANNELS, 0.5),
    )
    f = facts["of-disc-dairy"]
    assert conversion_probability(social, f, "messenger", 12) > 2 * conversion_probability(
        social, f, "email", 12
    )


def test_tier_limited_offers_need_the_tier(world, facts):
    basic = next(c for c in world.customers if c.tier == "basic" and c.consent["email"])
    assert conversion_probability(basic, facts["of-pts-gold-double"], "email", 12) == 0


def test_onsite_offers_need_the_sales_channel(world, facts):
    c = world.customers[0]
    assert onsite_conversion_probability(c, facts["of-pts-app-install"], "web") == 0
    assert onsite_conversion_probability(c, facts["of-pts-app-install"], "app") > 0


def test_message_probabilities_open_at_least_as_often_as_they_convert(world, facts):
    from datetime import UTC, datetime

    from simulator.truth import message_probabilities

    when = datetime(2026, 3, 3, 18, tzinfo=UTC)
    for c in world.customers[:200]:
        for f in facts.values():
            opened, converted = message_probabilities(c, f, "email", when)
            assert 0 <= converted <= opened <= 1
    too_late = datetime(2030, 1, 1, tzinfo=UTC)
    assert message_probabilities(world.customers[0], facts["of-disc-dairy"], "email", too_late) == (
        0,
        0,
    )
