"""Closed loop: policies act on simulated customers with common random numbers."""

from datetime import UTC, datetime

import numpy as np
import pytest

from models.closed_loop import Round, choose, customer_index, normalized_gain, run_closed_loop
from simulator import ClosedLoop, SimulationConfig, make_world

AT = datetime(2026, 3, 4, 19, tzinfo=UTC)
ACTIONS = (("of-disc-dairy", "email"), ("of-disc-bakery", "email"), ("of-disc-dairy", "web"))


@pytest.fixture(scope="module")
def world(catalog):
    return make_world(SimulationConfig(customers=60, days=2, seed=4), catalog)


def rounds_for(world, scores):
    return [
        Round(c.customer_id, AT, ACTIONS, np.array([0.5, 0.25, 0.25]), np.array(scores), 0, 0.0)
        for c in world.customers if c.consent["email"]
    ]


def test_oracle_beats_random_and_policies_share_random_draws(world, catalog):
    rounds = rounds_for(world, [0.1, 0.2, 0.3])
    values = run_closed_loop(rounds, lambda: ClosedLoop(world, catalog, 3), seed=1)
    assert values["oracle"].expected >= max(v.expected for v in values.values())
    assert values["oracle"].expected > values["random"].expected
    again = run_closed_loop(rounds, lambda: ClosedLoop(world, catalog, 3), seed=1)
    assert again == values
    gain = normalized_gain({k: v.expected for k, v in values.items()})
    assert gain <= 1.0


def test_model_picks_its_best_score_and_every_identifier_finds_its_customer(world, catalog):
    loop = ClosedLoop(world, catalog, 3)
    rng = np.random.default_rng(0)
    [r] = rounds_for(world, [0.1, 0.9, 0.3])[:1]
    assert choose("model", r, loop, rng) == 1
    assert 0 <= choose("logging", r, loop, rng) < 3
    index = customer_index(world)
    for c in world.customers:
        assert all(index[i] == c.customer_id for i in c.cookies)
    with pytest.raises(ValueError, match="policy must be one of"):
        choose("greedy", r, loop, rng)
    with pytest.raises(ValueError, match="rounds must not be empty"):
        run_closed_loop([], lambda: loop, seed=1)
