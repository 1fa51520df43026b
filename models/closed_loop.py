"""Closed-loop evaluation: policies act on simulated customers; the simulator answers.

For each logged decision point of a world the models never trained on (fresh customers
with their own history), every policy picks one of the logged candidates and the
simulator's :class:`~simulator.ClosedLoop` answers with a sampled reward and its true
probability. Each policy gets its own loop with the same seed, so all policies see the
same random draws (common random numbers: differences are not noise of the draws).

Only the environment is read from the simulator (which customer a visitor is, how they
respond); the models see only their point-in-time features.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from simulator import ClosedLoop, World

if TYPE_CHECKING:
    from features.arbitration import Exploration

POLICIES = ("model", "logging", "random", "oracle", "served")


@dataclass(frozen=True)
class Round:
    """One decision point: who, when, the candidate actions and what each policy needs.

    ``propensities`` are the logging policy's; ``scores`` the model's calibrated
    probabilities; ``logged`` the index of the logged action and ``reward`` its outcome.
    ``served`` is the probability of each action under the policy serving would run with
    this model (:func:`served_probabilities`); ``None`` where it was not computed.
    """

    customer_id: str
    at: datetime
    actions: tuple[tuple[str, str], ...]
    propensities: np.ndarray
    scores: np.ndarray
    logged: int
    reward: float
    served: np.ndarray | None = None


def served_probabilities(scores: np.ndarray, worths: np.ndarray, ids: Sequence[str],
                         exploration: Exploration, rng: random.Random | None = None,
                         ) -> np.ndarray:  # fmt: skip
    """Return each action's probability of being shown first by serving's policy.

    Serving ranks offers by probability × value × lever (``worths``), ties by id, and
    explores (:mod:`features.arbitration`): with ε-greedy the first position takes the best
    action with probability ``1 - ε + ε/n``, every other one ``ε/n``; with Thompson
    sampling the probabilities are shares of Monte Carlo draws from ``rng``.

    >>> from features.arbitration import EpsilonGreedy
    >>> served_probabilities(np.array([0.2, 0.1]), np.array([1.0, 3.0]), ["a", "b"],
    ...                      EpsilonGreedy(0.2))
    array([0.1, 0.9])
    """
    from features.arbitration import rank_scores

    tie = np.empty(len(ids), dtype=np.int64)
    tie[np.argsort(np.asarray(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    probabilities = np.asarray(scores, dtype=np.float64)
    order = rank_scores(probabilities * worths, tie)
    return exploration.first_slot(order, probabilities, worths, rng or random.Random(0))


@dataclass(frozen=True)
class PolicyValue:
    """A policy's mean sampled reward and mean true reward probability per decision.

    For ``served``, a stochastic policy, ``expected`` averages the true probabilities over
    its action probabilities, so it carries no noise of the one action drawn per round.
    """

    reward: float
    expected: float
    n: int


def customer_index(world: World) -> dict[str, str]:
    """Map every identifier value of the world's customers to the customer id.

    A device shared by a household answers for its owner (the first customer).
    """
    index: dict[str, str] = {}
    for c in world.customers:
        for identifier in (c.customer_id, *c.cookies, *c.devices, c.card_id):
            if identifier:
                index.setdefault(identifier, c.customer_id)
    return index


def choose(policy: str, r: Round, loop: ClosedLoop, rng: np.random.Generator) -> int:
    """Return the index of the action ``policy`` picks in round ``r``."""
    if policy == "model":
        return int(np.argmax(r.scores))
    if policy == "logging":
        p = r.propensities / r.propensities.sum()
        return int(rng.choice(len(p), p=p))
    if policy == "random":
        return int(rng.integers(len(r.actions)))
    if policy == "oracle":
        return r.actions.index(loop.oracle(r.customer_id, r.actions, r.at))  # type: ignore[arg-type]
    if policy == "served":
        if r.served is None:
            message = "the served policy needs rounds built with offer worths (build_rounds)"
            raise ValueError(message)
        return int(rng.choice(len(r.served), p=r.served))
    message = f"policy must be one of {POLICIES}; got {policy!r}"
    raise ValueError(message)


def run_closed_loop(
    rounds: Sequence[Round],
    make_loop: Callable[[], ClosedLoop],
    seed: int,
    policies: Sequence[str] = POLICIES,
) -> dict[str, PolicyValue]:
    """Let each policy act on every round; return its reward per decision."""
    if not rounds:
        message = "rounds must not be empty"
        raise ValueError(message)
    out = {}
    for policy in policies:
        loop = make_loop()
        rng = np.random.default_rng([seed, POLICIES.index(policy)])
        rewards, expected = 0, 0.0
        for r in rounds:
            offer_id, channel = r.actions[choose(policy, r, loop, rng)]
            outcome = loop.respond(r.customer_id, offer_id, channel, r.at)
            rewards += outcome.reward
            if policy == "served" and r.served is not None:
                # Stochastic: its expected reward is over its probabilities, not the draw.
                weighted = zip(r.served.tolist(), r.actions, strict=True)
                expected += sum(p * loop.expected(r.customer_id, o, c, r.at)
                                for p, (o, c) in weighted if p)  # fmt: skip
            else:
                expected += outcome.expected
        out[policy] = PolicyValue(rewards / len(rounds), expected / len(rounds), len(rounds))
    return out


def normalized_gain(values: dict[str, float]) -> float:
    r"""Return :math:`(V_{model} - V_{random}) / (V_{oracle} - V_{random})`."""
    span = values["oracle"] - values["random"]
    return (values["model"] - values["random"]) / span if span else float("nan")
