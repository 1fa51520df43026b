"""Answer a policy's decisions with the ground truth, and what an oracle would have chosen.

>>> from datetime import UTC, datetime
>>> from features.catalog import load_catalog
>>> from simulator.world import SimulationConfig, make_world
>>> catalog = load_catalog()
>>> world = make_world(SimulationConfig(customers=20, days=2, seed=3), catalog)
>>> loop = ClosedLoop(world, catalog, seed=1)
>>> at = datetime(2026, 3, 3, 18, tzinfo=UTC)
>>> candidates = [("of-disc-dairy", "email"), ("of-pts-app-install", "push")]
>>> best = loop.oracle("cu-000004", candidates, at)
>>> value = loop.expected("cu-000004", *best, at)
>>> value >= loop.expected("cu-000004", "of-disc-dairy", "email", at)
True
>>> outcome = loop.respond("cu-000004", "of-disc-dairy", "email", at)
>>> outcome.reward in (0, 1) and 0.0 <= outcome.expected <= 1.0
True
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from features.catalog import Catalog
from features.decisions import Choice
from simulator.truth import (
    OfferFacts,
    conversion_probability,
    local_hour,
    offer_facts,
    onsite_conversion_probability,
)
from simulator.world import (
    MESSAGE_CHANNELS,
    Customer,
    SimulationConfig,
    World,
    make_customer,
)

__all__ = ["ClosedLoop", "Outcome"]

Candidate = tuple[str | None, str] | Choice


@dataclass(frozen=True)
class Outcome:
    """The customer's answer: ``reward`` 1 if they redeemed, and the true probability."""

    reward: int
    expected: float


class ClosedLoop:
    """Let a policy act on simulated customers and get sampled rewards back.

    Rewards are drawn from one stream seeded by ``seed``, one draw per :meth:`respond`
    call, so the same calls in the same order give the same rewards.
    """

    def __init__(self, world: World, catalog: Catalog, seed: int) -> None:
        self.world = world
        self.catalog = catalog
        self.seed = seed
        self.facts: dict[str, OfferFacts] = offer_facts(catalog)
        self._customers: dict[str, Customer] = dict(world.by_id)
        self._rng = random.Random(f"closed-loop:{seed}")

    def customer(self, customer_id: str) -> Customer:
        """Return a world or fresh customer by id."""
        try:
            return self._customers[customer_id]
        except KeyError:
            message = f"unknown customer {customer_id!r}; use a world or fresh customer id"
            raise KeyError(message) from None

    def expected(self, customer_id: str, offer_id: str | None, channel: str, at: datetime) -> float:
        """Return the true redemption probability of an offer in a channel at ``at``.

        Message channels (email, push, sms, messenger) use the send time; ``web`` and
        ``app`` mean the offer is shown on site; no offer or channel ``none`` earns 0.
        """
        if at.tzinfo is None:
            message = f"at must be a timezone-aware datetime; got {at!r}"
            raise ValueError(message)
        if offer_id is None or channel == "none":
            return 0.0
        customer = self.customer(customer_id)
        try:
            facts = self.facts[offer_id]
        except KeyError:
            message = f"unknown offer {offer_id!r}"
            raise KeyError(message) from None
        if not facts.offer.valid_at(at):
            return 0.0
        if channel in MESSAGE_CHANNELS:
            return conversion_probability(customer, facts, channel, local_hour(customer, at))
        if channel in ("web", "app"):
            return onsite_conversion_probability(customer, facts, channel)
        known = ", ".join((*MESSAGE_CHANNELS, "web", "app", "none"))
        message = f"unknown channel {channel!r}; expected one of {known}"
        raise ValueError(message)

    def respond(
        self, customer_id: str, offer_id: str | None, channel: str, send_at: datetime
    ) -> Outcome:
        """Deliver one action and sample whether the customer redeems it."""
        expected = self.expected(customer_id, offer_id, channel, send_at)
        draw = self._rng.random()  # drawn even when expected is 0, to keep streams aligned
        return Outcome(reward=int(draw < expected), expected=expected)

    def oracle(
        self, customer_id: str, candidates: Iterable[Candidate], at: datetime
    ) -> tuple[str | None, str]:
        """Return the candidate ``(offer_id, channel)`` with the highest expected reward."""
        best: tuple[str | None, str] | None = None
        best_value = -1.0
        for candidate in candidates:
            if isinstance(candidate, Choice):
                offer_id, channel = candidate.offer_id, str(candidate.channel)
            else:
                offer_id, channel = candidate
            value = self.expected(customer_id, offer_id, channel, at)
            if value > best_value:
                best, best_value = (offer_id, channel), value
        if best is None:
            message = "candidates must not be empty"
            raise ValueError(message)
        return best

    def fresh_customers(self, n: int, seed: int) -> list[Customer]:
        """Draw ``n`` new customers from the world's distribution, known to this loop.

        Their ids (``cu-f<seed>-000000`` …) never clash with the world's.
        """
        config: SimulationConfig = self.world.config
        fresh = [
            make_customer(
                config, self.catalog, i, namespace=f"fresh{seed}", customer_id=f"cu-f{seed}-{i:06d}"
            )
            for i in range(n)
        ]
        self._customers.update((c.customer_id, c) for c in fresh)
        return fresh
