"""Arbitration and exploration: deterministic ranking; ε-greedy and Thompson propensities."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.arbitration import (
    EpsilonGreedy,
    Thompson,
    arbitration_score,
    explore,
    first_slot_propensities,
    rank,
)


def test_arbitration_score_is_propensity_times_value_times_lever():
    assert arbitration_score(0.2, 5.0, 1.5) == pytest.approx(1.5)


def test_ties_are_broken_by_id_deterministically():
    ids = ["of-c", "of-a", "of-b"]
    assert rank(ids, [1.0, 1.0, 2.0]) == [2, 1, 0]
    assert rank(ids, [1.0, 1.0, 1.0]) == [1, 2, 0]


@given(n=st.integers(1, 50), epsilon=st.floats(0, 1))
def test_first_slot_propensities_sum_to_one(n, epsilon):
    probabilities = first_slot_propensities(n, epsilon)
    assert sum(probabilities) == pytest.approx(1.0)
    assert min(probabilities) >= epsilon / n - 1e-12


def test_without_exploration_the_slate_is_the_ranking():
    picks = explore([3, 1, 2, 0], 3, 0.0, random.Random(0))
    assert [p.index for p in picks] == [3, 1, 2]
    assert all(p.propensity == 1.0 and not p.explored for p in picks)


@given(seed=st.integers(0, 10_000), n=st.integers(1, 20), k=st.integers(1, 5),
       epsilon=st.floats(0, 1))  # fmt: skip
@settings(max_examples=200)
def test_logged_propensities_are_the_exact_epsilon_greedy_ones(seed, n, k, epsilon):
    order = list(range(n))
    picks = explore(order, k, epsilon, random.Random(seed))
    remaining = list(order)
    for pick in picks:
        m = len(remaining)
        best = remaining[0]
        expected = (1 - epsilon) * (pick.index == best) + epsilon / m
        assert pick.propensity == pytest.approx(expected)
        remaining.remove(pick.index)
    assert len(picks) == min(k, n)


def test_empirical_frequencies_match_the_propensities():
    order, epsilon, draws = [4, 2, 0, 1, 3], 0.3, 20_000
    rng = random.Random(7)
    seen = Counter(explore(order, 1, epsilon, rng)[0].index for _ in range(draws))
    for index, expected in zip(order, first_slot_propensities(5, epsilon), strict=True):
        assert seen[index] / draws == pytest.approx(expected, abs=0.015)


def test_epsilon_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"epsilon must be within \[0, 1\]; got 1.5"):
        explore([0], 1, 1.5, random.Random(0))


PROBABILITIES = np.array([0.030, 0.050, 0.020, 0.045, 0.010])
WORTH = np.array([10.0, 4.0, 12.0, 5.0, 25.0])


def _greedy_order() -> list[int]:
    return rank([f"of-{i}" for i in range(5)], (PROBABILITIES * WORTH).tolist())


def test_thompson_logs_the_first_position_propensities_it_picks_with():
    thompson, order, decisions = Thompson(strength=40, draws=200), _greedy_order(), 3000
    picked, logged = Counter(), Counter()
    for seed in range(decisions):
        slate = thompson.choose(order, PROBABILITIES, WORTH, 2, random.Random(seed))
        assert sum(slate.first_slot.values()) == pytest.approx(1.0)
        picked[slate.picks[0].index] += 1
        logged.update(slate.first_slot)
    for index in order:
        assert picked[index] / decisions == pytest.approx(logged[index] / decisions, abs=0.03)
    assert len(picked) == 5  # every candidate is explored at this strength


@given(seed=st.integers(0, 10_000), k=st.integers(1, 5), draws=st.integers(1, 50))
def test_thompson_logs_a_positive_propensity_for_every_pick_and_repeats_itself(seed, k, draws):
    thompson = Thompson(strength=20, draws=draws)
    slate = thompson.choose(_greedy_order(), PROBABILITIES, WORTH, k, random.Random(seed))
    again = thompson.choose(_greedy_order(), PROBABILITIES, WORTH, k, random.Random(seed))
    assert slate == again
    assert len({p.index for p in slate.picks}) == len(slate.picks) == k
    for pick in slate.picks:
        # The deciding draw is one of the draws that estimate the propensity.
        assert 1 / draws - 1e-12 <= pick.propensity <= 1.0


def test_thompson_explores_less_the_more_the_estimates_are_worth():
    order = _greedy_order()
    best = order[0]

    def share_of_best(strength: float) -> float:
        thompson = Thompson(strength=strength, draws=10)
        picks = [thompson.choose(order, PROBABILITIES, WORTH, 1, random.Random(s)).picks[0]
                 for s in range(1000)]  # fmt: skip
        return sum(p.index == best for p in picks) / len(picks)

    assert share_of_best(5) < share_of_best(500) < share_of_best(100_000)
    assert share_of_best(100_000) > 0.95


def test_thompson_never_shows_an_offer_worth_nothing_ahead_of_one_worth_something():
    worth = WORTH.copy()
    worth[4] = 0.0
    order = rank([f"of-{i}" for i in range(5)], (PROBABILITIES * worth).tolist())
    for seed in range(300):
        slate = Thompson(strength=2, draws=20).choose(order, PROBABILITIES, worth, 4,
                                                      random.Random(seed))  # fmt: skip
        assert 4 not in [p.index for p in slate.picks]
        assert slate.first_slot[4] == 0.0


def test_epsilon_greedy_as_an_exploration_is_explore_with_its_propensities():
    order = _greedy_order()
    slate = EpsilonGreedy(0.3).choose(order, PROBABILITIES, WORTH, 3, random.Random(5))
    assert slate.picks == explore(order, 3, 0.3, random.Random(5))
    assert list(slate.first_slot.values()) == first_slot_propensities(5, 0.3)
    with pytest.raises(ValueError, match="strength must be > 0"):
        Thompson(strength=0)
