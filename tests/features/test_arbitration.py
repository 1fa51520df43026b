"""Arbitration and ε-greedy exploration: deterministic ranking, exact propensities."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.arbitration import arbitration_score, explore, first_slot_propensities, rank


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
