import pytest

from simulator import PERSONAS, SimulationConfig, make_world
from simulator.world import make_customer

STORE_ZONES = {"Europe/Berlin", "Europe/London", "Europe/Helsinki", "Europe/Lisbon"}


def test_customers_do_not_depend_on_how_many_there_are(catalog):
    small = make_world(SimulationConfig(customers=10, seed=3), catalog)
    large = make_world(SimulationConfig(customers=40, seed=3), catalog)
    assert small.customers == large.customers[:10]


def test_another_seed_draws_other_customers(catalog):
    a = make_world(SimulationConfig(customers=5, seed=3), catalog)
    b = make_world(SimulationConfig(customers=5, seed=4), catalog)
    assert [c.persona_mix for c in a.customers] != [c.persona_mix for c in b.customers]


def test_traits_are_in_range(catalog):
    world = make_world(SimulationConfig(customers=300, seed=1), catalog)
    dominants = set()
    for c in world.customers:
        assert set(c.persona_mix) == set(PERSONAS)
        assert sum(c.persona_mix.values()) == pytest.approx(1)
        assert max(c.persona_mix, key=c.persona_mix.get) == c.dominant_persona
        assert set(c.category_affinity) == set(catalog.categories)
        assert sum(c.category_affinity.values()) == pytest.approx(1)
        assert 0 <= c.price_sensitivity <= 1
        assert all(0 <= r <= 1 for r in c.responsiveness.values())
        assert 0 <= c.peak_hour < 24
        assert c.timezone == catalog.store(c.home_store).timezone
        assert c.tier in ("basic", "silver", "gold")
        dominants.add(c.dominant_persona)
        if c.anonymous_only:
            assert not any(c.consent.values()) and c.card_id is None and c.signup_day is None
        if c.consent["push"]:
            assert c.app_user
    assert dominants == set(PERSONAS)
    assert {c.timezone for c in world.customers} == STORE_ZONES
    share = sum(c.anonymous_only for c in world.customers) / len(world.customers)
    assert 0.08 < share < 0.25


def test_identifiers_are_unique_except_shared_devices(catalog):
    world = make_world(SimulationConfig(customers=600, seed=2, shared_device_share=0.1), catalog)
    owners: dict[str, list[str]] = {}
    for c in world.customers:
        for identifier in c.identifiers():
            owners.setdefault(identifier, []).append(c.customer_id)
    shared = {d for c in world.customers for d in c.shared_devices}
    assert shared
    for identifier, who in owners.items():
        assert len(who) == (2 if identifier in shared else 1), identifier


def test_fresh_namespace_draws_new_customers(catalog):
    config = SimulationConfig(customers=5, seed=3)
    fresh = make_customer(config, catalog, 0, namespace="fresh1", customer_id="cu-f1-000000")
    assert fresh.customer_id == "cu-f1-000000"
    assert fresh.persona_mix != make_customer(config, catalog, 0).persona_mix


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"customers": 0}, "customers must be >= 1; got 0"),
        ({"days": -1}, "days must be >= 1; got -1"),
        ({"late_rate": 1.5}, "late_rate must be within [0, 1]; got 1.5"),
        ({"max_late_hours": 0}, "max_late_hours must be > 0"),
        ({"contact_hash_key": b""}, "contact_hash_key must not be empty"),
    ],
)
def test_bad_config_is_rejected_with_the_field_named(changes, text):
    with pytest.raises(ValueError) as error:
        SimulationConfig(**changes)
    assert text in str(error.value)


def test_naive_start_is_rejected():
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone-aware"):
        SimulationConfig(start=datetime(2026, 3, 2))  # noqa: DTZ001
