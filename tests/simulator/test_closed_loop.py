from datetime import UTC, datetime

import pytest

from simulator import ClosedLoop, SimulationConfig, make_world
from simulator.policy import Campaign, draw, message_actions
from simulator.truth import offer_facts
from simulator.world import MESSAGE_CHANNELS

AT = datetime(2026, 3, 4, 17, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(catalog):
    return make_world(SimulationConfig(customers=200, days=3, seed=21), catalog)


def candidates(catalog, customer):
    facts = offer_facts(catalog)
    channels = [c for c in MESSAGE_CHANNELS if customer.consent[c]]
    campaign = Campaign("cmp", tuple(sorted(facts)))
    actions = message_actions(campaign, facts, channels, AT, customer.tier, customer.home_store)
    return draw(actions, 0.5).candidates


def test_oracle_is_at_least_as_good_as_any_candidate(world, catalog):
    loop = ClosedLoop(world, catalog, seed=1)
    checked = 0
    for customer in world.customers:
        if not any(customer.consent.values()):
            continue
        choices = candidates(catalog, customer)
        best = loop.oracle(customer.customer_id, choices, AT)
        best_value = loop.expected(customer.customer_id, *best, AT)
        for c in choices:
            assert best_value >= loop.expected(customer.customer_id, c.offer_id, c.channel, AT)
        checked += 1
    assert checked > 100


def test_respond_is_deterministic_for_a_seed(world, catalog):
    calls = [(c.customer_id, "of-disc-dairy", "email", AT) for c in world.customers]

    def rewards(seed):
        loop = ClosedLoop(world, catalog, seed=seed)
        return [loop.respond(*call) for call in calls]

    first = rewards(3)
    assert first == rewards(3)
    assert [o.expected for o in first] == [o.expected for o in rewards(4)]
    assert all(o.reward in (0, 1) and 0 <= o.expected <= 1 for o in first)


def test_rewards_match_expectations_on_average(world, catalog):
    loop = ClosedLoop(world, catalog, seed=5)
    customer = next(c for c in world.customers if c.consent["email"])
    outcomes = [
        loop.respond(customer.customer_id, "of-disc-dairy", "email", AT) for _ in range(4000)
    ]
    expected = outcomes[0].expected
    assert sum(o.reward for o in outcomes) / len(outcomes) == pytest.approx(expected, abs=0.03)


def test_no_consent_or_no_action_earns_nothing(world, catalog):
    loop = ClosedLoop(world, catalog, seed=1)
    customer = next(c for c in world.customers if not c.consent["sms"])
    assert loop.respond(customer.customer_id, "of-disc-dairy", "sms", AT).expected == 0
    assert loop.expected(customer.customer_id, None, "email", AT) == 0
    assert loop.expected(customer.customer_id, "of-disc-dairy", "none", AT) == 0


def test_fresh_customers_are_new_and_answerable(world, catalog):
    loop = ClosedLoop(world, catalog, seed=1)
    fresh = loop.fresh_customers(50, seed=8)
    assert len({c.customer_id for c in fresh}) == 50
    assert not {c.customer_id for c in fresh} & set(world.by_id)
    assert fresh == ClosedLoop(world, catalog, seed=2).fresh_customers(50, seed=8)
    assert loop.expected(fresh[0].customer_id, "of-disc-dairy", "web", AT) > 0


def test_bad_inputs_are_named(world, catalog):
    loop = ClosedLoop(world, catalog, seed=1)
    with pytest.raises(KeyError, match="cu-nobody"):
        loop.respond("cu-nobody", "of-disc-dairy", "email", AT)
    with pytest.raises(KeyError, match="of-nothing"):
        loop.respond("cu-000001", "of-nothing", "email", AT)
    with pytest.raises(ValueError, match="unknown channel 'fax'"):
        loop.respond("cu-000001", "of-disc-dairy", "fax", AT)
    with pytest.raises(ValueError, match="timezone-aware"):
        loop.respond("cu-000001", "of-disc-dairy", "email", datetime(2026, 3, 4))  # noqa: DTZ001
    with pytest.raises(ValueError, match="candidates must not be empty"):
        loop.oracle("cu-000001", [], AT)
