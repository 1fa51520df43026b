"""Closed loop: policies act on simulated customers with common random numbers."""

import dataclasses
import random
from datetime import UTC, datetime

import numpy as np
import pytest

from features.arbitration import EpsilonGreedy, Thompson
from models.closed_loop import (
    Round,
    choose,
    customer_index,
    normalized_gain,
    run_closed_loop,
    served_probabilities,
)
from simulator import ClosedLoop, SimulationConfig, make_world

AT = datetime(2026, 3, 4, 19, tzinfo=UTC)
ACTIONS = (("of-disc-dairy", "email"), ("of-disc-bakery", "email"), ("of-disc-dairy", "web"))


@pytest.fixture(scope="module")
def world(catalog):
    return make_world(SimulationConfig(customers=60, days=2, seed=4), catalog)


def rounds_for(world, scores, worths=(1.0, 1.0, 1.0), epsilon=0.1):
    ids = [offer_id for offer_id, _ in ACTIONS]
    served = served_probabilities(np.array(scores), np.array(worths), ids, EpsilonGreedy(epsilon))
    return [
        Round(c.customer_id, AT, ACTIONS, np.array([0.5, 0.25, 0.25]), np.array(scores), 0, 0.0,
              served)
        for c in world.customers if c.consent["email"]
    ]  # fmt: skip


def test_the_served_policy_ranks_by_value_and_lever_and_explores_with_epsilon():
    ids = ["of-b", "of-a", "of-c"]
    # 0.30 × 1 < 0.20 × 2: value × lever can outrank a higher probability.
    served = served_probabilities(
        np.array([0.3, 0.2, 0.1]), np.array([1.0, 2.0, 1.0]), ids, EpsilonGreedy(0.3)
    )
    assert served.tolist() == pytest.approx([0.1, 0.8, 0.1])
    assert served.sum() == pytest.approx(1.0)
    # Equal arbitration scores: the lower id goes first, as serving breaks ties.
    tied = served_probabilities(np.array([0.2, 0.2, 0.1]), np.ones(3), ids, EpsilonGreedy(0.0))
    assert tied.tolist() == [0.0, 1.0, 0.0]


def test_the_served_policy_is_what_the_closed_loop_samples(world, catalog):
    rounds = rounds_for(world, [0.1, 0.2, 0.3], worths=(10.0, 1.0, 1.0), epsilon=0.0)
    loop = ClosedLoop(world, catalog, 3)
    rng = np.random.default_rng(0)
    assert {choose("served", r, loop, rng) for r in rounds} == {0}  # 0.1 × 10 ranks first
    bare = [dataclasses.replace(r, served=None) for r in rounds]
    with pytest.raises(ValueError, match="the served policy needs rounds"):
        run_closed_loop(bare, lambda: loop, seed=1)


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


def test_off_policy_estimates_of_the_served_policy_use_its_probabilities(world):
    from models.evaluate import ope_report, target_policy

    rounds = rounds_for(world, [0.1, 0.2, 0.3], epsilon=0.3)
    [served] = {tuple(r.served) for r in rounds}
    action_prob, q_policy = target_policy(rounds, "served")
    assert action_prob.tolist() == [served[0]] * len(rounds)  # the logged action is the first
    expected = float(np.dot(served, [0.1, 0.2, 0.3]))
    assert q_policy.tolist() == pytest.approx([expected] * len(rounds))
    argmax_prob, _ = target_policy(rounds, "model")
    assert argmax_prob.tolist() == [0.0] * len(rounds)  # argmax picks the third, never logged
    report = ope_report(rounds, n_bootstrap=20, seed=1, policy="served")
    assert report["_diagnostics"]["matches"] == pytest.approx(served[0] * len(rounds), abs=1e-3)
    with pytest.raises(ValueError, match="policy must be 'model' or 'served'"):
        target_policy(rounds, "greedy")


def test_the_served_policys_expected_value_is_over_its_probabilities(world, catalog):
    rounds = rounds_for(world, [0.1, 0.2, 0.3], epsilon=0.5)
    values = run_closed_loop(rounds, lambda: ClosedLoop(world, catalog, 3), seed=1,
                             policies=["served"])  # fmt: skip
    loop = ClosedLoop(world, catalog, 3)
    exact = np.mean([
        sum(p * loop.expected(r.customer_id, o, c, r.at)
            for p, (o, c) in zip(r.served, r.actions, strict=True))
        for r in rounds
    ])  # fmt: skip
    assert values["served"].expected == pytest.approx(exact)


def test_thompson_first_position_probabilities_are_how_often_serving_shows_each_first():
    ids = ["of-a", "of-b", "of-c"]
    scores, worths = np.array([0.05, 0.04, 0.02]), np.array([1.0, 1.0, 2.0])
    served = served_probabilities(
        scores, worths, ids, Thompson(strength=50, draws=20_000), random.Random(1)
    )
    assert served.sum() == pytest.approx(1.0)
    # Serving's own choice, one draw per decision, 4,000 decisions (seeded).
    thompson, rng = Thompson(strength=50, draws=1), random.Random(2)
    order = [0, 1, 2]  # 0.05 > 0.04 = 0.02 x 2, ties by id
    shown = (
        np.bincount(
            [thompson.choose(order, scores, worths, 1, rng).picks[0].index for _ in range(4000)],
            minlength=3,
        )
        / 4000
    )
    assert shown.tolist() == pytest.approx(served.tolist(), abs=0.03)
    # Not epsilon-greedy's answer: every candidate has a real chance of the first place.
    greedy = served_probabilities(scores, worths, ids, EpsilonGreedy(0.05))
    assert min(served) > 0.1 and abs(served - greedy).max() > 0.2


def test_thompson_rounds_are_evaluated_with_thompsons_probabilities(world):
    from models.evaluate import target_policy

    thompson = Thompson(strength=50, draws=2000)
    ids = [offer_id for offer_id, _ in ACTIONS]
    served = served_probabilities(
        np.array([0.1, 0.2, 0.3]), np.ones(3), ids, thompson, random.Random(5)
    )
    rounds = [dataclasses.replace(r, served=served) for r in rounds_for(world, [0.1, 0.2, 0.3])]
    action_prob, q_policy = target_policy(rounds, "served")
    assert action_prob.tolist() == [served[0]] * len(rounds)
    assert 0 < served[0] < served[1] < served[2] < 1
    assert q_policy.tolist() == pytest.approx([float(served @ [0.1, 0.2, 0.3])] * len(rounds))
